// A generic directed acyclic graph over string node names (Terraform's internal/dag idea):
// it knows nothing of meshes or VMs. Backed by a Boost.Graph adjacency_list.
#pragma once

#include <cstddef>
#include <string>
#include <unordered_map>
#include <vector>

#include <boost/graph/adjacency_list.hpp>

#include "engine/status.h"

namespace onboard {

class Dag {
 public:
  // setS out-edges: adding an edge is O(log degree) and never makes a parallel edge (the mesh
  // expansion node has one out-edge per workload).
  using Graph = boost::adjacency_list<boost::setS, boost::vecS, boost::bidirectionalS>;

  // Returns the node's index; adding an existing name returns its index.
  size_t AddNode(const std::string& name);
  // from -> to: `to` needs `from` (from runs first). Both must exist.
  void AddEdge(size_t from, size_t to);
  bool Has(const std::string& name) const { return index_.count(name) > 0; }
  size_t Index(const std::string& name) const { return index_.at(name); }
  const std::string& Name(size_t i) const { return names_[i]; }
  size_t size() const { return names_.size(); }
  size_t edge_count() const { return boost::num_edges(g_); }

  std::vector<size_t> Successors(size_t i) const;
  std::vector<size_t> Predecessors(size_t i) const;

  // Kahn's algorithm, ties broken by name for a stable order. A cycle is an error naming its
  // path: "cycle: a -> b -> a".
  Result<std::vector<size_t>> TopologicalOrder() const;
  // The same nodes with every edge reversed (destroy order).
  Dag Reversed() const;
  // Nodes reachable backwards from the given ones (their dependencies), the given ones included.
  std::vector<size_t> WithDependencies(const std::vector<size_t>& nodes) const;
  // Graphviz DOT, nodes and edges sorted by name.
  std::string ToDot(const std::string& graph_name) const;

 private:
  Graph g_;
  std::vector<std::string> names_;
  std::unordered_map<std::string, size_t> index_;
};

}  // namespace onboard
