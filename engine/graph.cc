#include "engine/graph.h"

#include <algorithm>
#include <queue>
#include <sstream>

namespace onboard {

size_t Dag::AddNode(const std::string& name) {
  auto it = index_.find(name);
  if (it != index_.end()) return it->second;
  size_t i = boost::add_vertex(g_);
  names_.push_back(name);
  index_.emplace(name, i);
  return i;
}

void Dag::AddEdge(size_t from, size_t to) {
  boost::add_edge(from, to, g_);
}

std::vector<size_t> Dag::Successors(size_t i) const {
  std::vector<size_t> out;
  for (auto [it, end] = boost::out_edges(i, g_); it != end; ++it) out.push_back(boost::target(*it, g_));
  return out;
}

std::vector<size_t> Dag::Predecessors(size_t i) const {
  std::vector<size_t> out;
  for (auto [it, end] = boost::in_edges(i, g_); it != end; ++it) out.push_back(boost::source(*it, g_));
  return out;
}

Result<std::vector<size_t>> Dag::TopologicalOrder() const {
  const size_t n = size();
  std::vector<size_t> indegree(n);
  for (size_t i = 0; i < n; ++i) indegree[i] = boost::in_degree(i, g_);
  auto by_name = [this](size_t a, size_t b) { return names_[a] > names_[b]; };
  std::priority_queue<size_t, std::vector<size_t>, decltype(by_name)> ready(by_name);
  for (size_t i = 0; i < n; ++i)
    if (indegree[i] == 0) ready.push(i);
  std::vector<size_t> order;
  order.reserve(n);
  while (!ready.empty()) {
    size_t v = ready.top();
    ready.pop();
    order.push_back(v);
    for (auto [it, end] = boost::out_edges(v, g_); it != end; ++it) {
      size_t t = boost::target(*it, g_);
      if (--indegree[t] == 0) ready.push(t);
    }
  }
  if (order.size() == n) return order;

  // A cycle remains among the nodes with indegree > 0: walk predecessors until one repeats.
  size_t start = 0;
  for (size_t i = 0; i < n; ++i)
    if (indegree[i] > 0) { start = i; break; }
  std::vector<size_t> path;
  std::vector<int> seen_at(n, -1);
  size_t v = start;
  while (seen_at[v] < 0) {
    seen_at[v] = static_cast<int>(path.size());
    path.push_back(v);
    for (auto [it, end] = boost::in_edges(v, g_); it != end; ++it) {
      size_t s = boost::source(*it, g_);
      if (indegree[s] > 0) { v = s; break; }
    }
  }
  std::vector<size_t> cycle(path.begin() + seen_at[v], path.end());
  std::reverse(cycle.begin(), cycle.end());  // predecessors walked backwards: flip to edge order
  // Start at the smallest name so the message is the same whichever node the walk began at.
  auto first = std::min_element(cycle.begin(), cycle.end(),
                                [this](size_t a, size_t b) { return names_[a] < names_[b]; });
  std::rotate(cycle.begin(), first, cycle.end());
  std::string text;
  for (size_t c : cycle) text += names_[c] + " -> ";
  text += names_[cycle.front()];
  return Result<std::vector<size_t>>::Error("dependency cycle: " + text);
}

Dag Dag::Reversed() const {
  Dag r;
  for (const auto& name : names_) r.AddNode(name);
  for (auto [it, end] = boost::edges(g_); it != end; ++it)
    r.AddEdge(boost::target(*it, g_), boost::source(*it, g_));
  return r;
}

std::vector<size_t> Dag::WithDependencies(const std::vector<size_t>& nodes) const {
  std::vector<bool> keep(size());
  std::vector<size_t> stack(nodes.begin(), nodes.end());
  while (!stack.empty()) {
    size_t v = stack.back();
    stack.pop_back();
    if (keep[v]) continue;
    keep[v] = true;
    for (size_t p : Predecessors(v)) stack.push_back(p);
  }
  std::vector<size_t> out;
  for (size_t i = 0; i < size(); ++i)
    if (keep[i]) out.push_back(i);
  return out;
}

std::string Dag::ToDot(const std::string& graph_name) const {
  std::vector<std::string> nodes(names_);
  std::sort(nodes.begin(), nodes.end());
  std::vector<std::pair<std::string, std::string>> edges;
  for (auto [it, end] = boost::edges(g_); it != end; ++it)
    edges.emplace_back(names_[boost::source(*it, g_)], names_[boost::target(*it, g_)]);
  std::sort(edges.begin(), edges.end());
  std::ostringstream out;
  out << "digraph \"" << graph_name << "\" {\n  rankdir=LR;\n  node [shape=box];\n";
  for (const auto& n : nodes) out << "  \"" << n << "\";\n";
  for (const auto& [a, b] : edges) out << "  \"" << a << "\" -> \"" << b << "\";\n";
  out << "}\n";
  return out.str();
}

}  // namespace onboard
