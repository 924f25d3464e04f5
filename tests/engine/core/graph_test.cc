#include <gtest/gtest.h>

#include "engine/graph.h"
#include "engine/desired.h"
#include "engine/plan.h"
#include "fakes.h"

namespace onboard {
namespace {

TEST(Dag, TopologicalOrderIsStableAndRespectsEdges) {
  Dag g;
  size_t c = g.AddNode("c"), a = g.AddNode("a"), b = g.AddNode("b");
  g.AddEdge(c, a);
  auto order = g.TopologicalOrder();
  ASSERT_TRUE(order.ok());
  std::vector<std::string> names;
  for (size_t i : *order) names.push_back(g.Name(i));
  EXPECT_EQ(names, (std::vector<std::string>{"b", "c", "a"}));
  (void)b;
}

TEST(Dag, CycleIsAnErrorNamingItsPath) {
  Dag g;
  size_t a = g.AddNode("a"), b = g.AddNode("b"), c = g.AddNode("c"), d = g.AddNode("d");
  g.AddEdge(d, a);
  g.AddEdge(a, b);
  g.AddEdge(b, c);
  g.AddEdge(c, a);
  auto order = g.TopologicalOrder();
  ASSERT_FALSE(order.ok());
  EXPECT_EQ(order.error(), "dependency cycle: a -> b -> c -> a");
}

TEST(Dag, ReversedAndDependencies) {
  Dag g;
  size_t a = g.AddNode("a"), b = g.AddNode("b"), c = g.AddNode("c"), x = g.AddNode("x");
  g.AddEdge(a, b);
  g.AddEdge(b, c);
  auto deps = g.WithDependencies({b});
  EXPECT_EQ(deps, (std::vector<size_t>{a, b}));
  Dag r = g.Reversed();
  EXPECT_EQ(r.Successors(c), std::vector<size_t>{b});
  EXPECT_EQ(r.edge_count(), 2u);
  (void)x;
}

TEST(Dag, DotListsNodesAndEdges) {
  Dag g;
  g.AddEdge(g.AddNode("token.ns/a"), g.AddNode("files.ns/a"));
  std::string dot = g.ToDot("onboard");
  EXPECT_NE(dot.find("\"token.ns/a\" -> \"files.ns/a\";"), std::string::npos) << dot;
}

TEST(BuildGraph, DesignEdgesPerWorkload) {
  Model m = testing::SampleModel(1);
  MeshFacts f = testing::SampleFacts();
  auto desired = BuildDesired(m, &f);
  FakeClock clock(1000);
  auto plan = Diff(desired, nullptr, clock, {});
  ASSERT_TRUE(plan.ok()) << plan.error();
  Dag g = BuildGraph(plan->changes, false);
  auto has = [&](const std::string& a, const std::string& b) {
    auto s = g.Successors(g.Index(a));
    return std::find(s.begin(), s.end(), g.Index(b)) != s.end();
  };
  EXPECT_TRUE(has("mesh_expansion.prod", "workload_entry.ns/w0"));
  EXPECT_TRUE(has("workload_entry.ns/w0", "container.ns/w0"));
  EXPECT_TRUE(has("sidecar.ns/w0", "container.ns/w0"));
  EXPECT_TRUE(has("token.ns/w0", "files.ns/w0"));
  EXPECT_TRUE(has("check.gateway.ns/w0", "files.ns/w0"));
  EXPECT_TRUE(has("files.ns/w0", "container.ns/w0"));
  EXPECT_TRUE(has("hosts.ns/w0", "container.ns/w0"));
  EXPECT_TRUE(has("container.ns/w0", "check.inbound.ns/w0"));
  EXPECT_EQ(g.edge_count(), 8u);
  // Destroy walks them reversed.
  Dag d = BuildGraph(plan->changes, true);
  auto s = d.Successors(d.Index("container.ns/w0"));
  EXPECT_NE(std::find(s.begin(), s.end(), d.Index("files.ns/w0")), s.end());
}

TEST(Address, ParseAndPrint) {
  auto a = Address::Parse("check.gateway.ns/w0");
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->type, ResourceType::kCheckGateway);
  EXPECT_EQ(a->name, "ns/w0");
  EXPECT_EQ(a->ToString(), "check.gateway.ns/w0");
  auto bad = Address::Parse("widget.ns/w0");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.error().find("workload_entry"), std::string::npos);
}

}  // namespace
}  // namespace onboard
