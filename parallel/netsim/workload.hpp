// Collective traffic for the flow-level simulator, as a sequence of phases.
//
// A phase is one step of a collective: every host's flows start together and
// the step ends when the last byte arrives. A phase may repeat back to back
// (ring all-reduce repeats one pattern 2 (N - 1) times).
//   alltoall          one phase: each host sends M / N bytes to every other host
//                     (M is its send buffer; its own share stays local)
//   ring              ring all-reduce of M bytes: 2 (N - 1) steps of M / N to the
//                     next host (hosts in leaf order, or a seeded shuffle)
//   halving_doubling  recursive halving reduce-scatter then recursive doubling
//                     all-gather: step i exchanges M / 2^(i+1) with host h xor 2^i
//                     (nearest partners first, so the largest steps stay in a leaf);
//                     with N not a power of two, the N - p extra hosts first fold
//                     their M bytes into hosts 0.. and get the result back at the end
//   moe               MoE dispatch from a routing trace, one phase per trace block
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "parallel/netsim/netsim_config.hpp"

namespace sy::net {

struct Flow {
  int32_t dst;
  int64_t bytes;
};

struct Phase {
  std::string name;
  int64_t repeat = 1;
  // Appends the flows of host src to out: dst ascending, dst != src, bytes > 0.
  std::function<void(int src, std::vector<Flow>& out)> flows_from;
};

// Tokens per (source rank, expert) of one or more MoE dispatches.
//   # comment lines
//   ranks R experts E
//   step S layer L          (a block: R lines of E non-negative integers follow)
//   t00 t01 ... t0(E-1)
//   ...
struct RoutingTrace {
  int ranks = 0;
  int experts = 0;
  std::vector<std::string> labels;            // (blocks,) "step S layer L"
  std::vector<std::vector<int64_t>> blocks;   // (blocks,) each (ranks, experts) row-major
};
// Throws IoError when the file cannot be read, ConfigError (naming the line) when it is malformed.
RoutingTrace read_routing_trace(const std::string& path);
// The header line and one block, as the trainer appends them.
std::string routing_trace_header(int ranks, int experts);
std::string routing_trace_block(int64_t step, int layer, const int64_t* tokens, int ranks, int experts);

// The phases of one collective of M = bytes per host over `hosts` hosts.
// moe maps the trace onto the hosts: host h sends trace row h mod R; with
// N >= E hosts, expert e has N / E replicas on hosts e N / E + i and host h
// sends to replica h mod (N / E); with E > N, expert e lives on host e / (E / N).
// Throws ConfigError when the shape does not fit (M < N for alltoall, E and N
// not dividing one another for moe).
std::vector<Phase> workload_phases(WorkloadKind kind, int hosts, int64_t bytes, const WorkloadConfig& config,
                                   const RoutingTrace* trace);

}  // namespace sy::net
