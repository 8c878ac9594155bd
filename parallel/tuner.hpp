// The run-time tuner of the MoE expert stage (DESIGN.md section 4): for each
// (MoE layer, floor(capacity / 128)) it picks the exchange degree P (DESIGN.md's
// mode r), the pipeline degree d and the all-to-all algorithm by timing trials
// in the first training steps, whenever moe.parallel_mode, moe.pipeline_degree
// or parallel.a2a_algo is auto.
//
// The search, per key: first a ternary search over the degrees (ascending r)
// at d = 1 and linear (or the fixed ones); then, at the best degree, every
// (d, algorithm) pair, the plain one timed again beside the others (a
// model's layers speed up or slow down over the first steps as its router
// learns, so plans compared are timed in the same steps); the choice is the fastest plan timed (the plain d = 1
// linear plan of that degree when within 5% of it). A plan is timed
// tuning_samples times (the fastest counts: the first use of a plan pays for
// buffers and connections), the samples of the plans compared at each point
// taken in turn (one of each, then the second of each, ...), after as many
// untimed warm-up trials; one sample is one forward + backward of the layer
// on a micro-batch, and its time is the shortest over the ranks (MIN over the
// agreement group): the ranks leave the layer's exchanges together, so the
// rank that arrived last has the time of the plan itself, while the others
// also waited for it (skew from outside the layer). Every rank records the
// same numbers and takes the same decisions.
// Each decision is logged in one line and, with parallel.tuning_file, saved;
// a later run that loads the table starts tuned (no trials for its keys).
//
// Collectives: finish_trial() agrees on the time (one 8-byte allreduce per
// trial); plan() is local and needs the same capacity on every rank (the MoE
// layer passes the capacity of the largest rank's batch, agreed in the
// reduction that agrees its capacity anyway), so that every rank opens and
// finishes the same trials. Every rank of the agreement group runs every MoE
// layer's forward and backward in the same order, as the layer needs anyway.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "core/config.hpp"
#include "parallel/communicator.hpp"

namespace sy::par {

// One way to run an MoE layer's expert stage.
struct ExpertPlan {
  int degree = 1;  // P, the token exchange's ranks (1 = no exchange: every expert gathered)
  int pipeline = 1;  // d, chunks of the exchange
  AllToAllAlgo algo = AllToAllAlgo::Linear;
  bool operator==(const ExpertPlan&) const = default;
};

// The plans a layer may run. degrees ascending, with their r (modes, same
// length; -1 for a degree between two r) for the log; algos[i] the algorithms the exchange group of degrees[i]
// supports (a subset of the candidates), pipelines the d to try.
struct TuningSpace {
  std::vector<int> degrees, modes;
  std::vector<int> pipelines;
  std::vector<std::vector<AllToAllAlgo>> algos;
  bool contains(const ExpertPlan& plan) const;
};

// The search for one key, a pure function of the timings recorded so far
// (tested on its own with synthetic costs).
class PlanSearch {
 public:
  // The first `warmup` trials run the search's first plan untimed: the
  // first steps of a run pay for cold caches, buffers and connections.
  explicit PlanSearch(TuningSpace space, int samples = 3, int warmup = 0);
  // The plan to time next, or nullopt once decided.
  std::optional<ExpertPlan> next() const;
  void record(const ExpertPlan& plan, double seconds);
  // The fastest plan timed (its full samples), except that the plain plan of
  // its degree (d = 1 and linear, or the fixed ones) wins when it is within
  // kPlainMargin of it: trials are noisy, and a plan that is not clearly
  // faster is not worth its chunks. Only after next() is nullopt.
  static constexpr double kPlainMargin = 0.05;
  ExpertPlan best() const;
  // What to run outside trials (evaluation) while the search is on: the
  // fastest plan timed so far, else the next one it would time.
  ExpertPlan fastest_so_far() const;
  // The fastest sample of the comparison that decided (stage 2 at the
  // chosen degree, else stage 1); infinity when untimed.
  double seconds(const ExpertPlan& plan) const;
  int plans_timed() const;  // (plan, stage) timings with all their samples
  int trials() const;  // samples recorded
  int warmup() const { return warmup_; }
  const TuningSpace& space() const { return space_; }

 private:
  // A plan's samples in one stage: 1 the degree search, 2 the (d, algorithm)
  // comparison at the chosen degree.
  struct Timing {
    ExpertPlan plan;
    int stage;
    std::vector<double> seconds;
  };
  std::optional<double> timed(const ExpertPlan& plan, int stage) const;  // once all samples are in
  int samples_of(const ExpertPlan& plan, int stage) const;
  std::optional<ExpertPlan> neediest(const std::vector<ExpertPlan>& plans, int stage) const;
  // The degree search replayed: the next plan it needs, or nullopt with the
  // index of the best degree in `best`.
  std::optional<ExpertPlan> degree_search(int& best) const;
  std::vector<ExpertPlan> pairs(int best) const;  // every (d, algorithm) at degree index best
  ExpertPlan base(int degree) const;              // d = 1 and linear, or the first candidates
  TuningSpace space_;
  int samples_, warmup_, warmed_ = 0;
  std::vector<Timing> timings_;
};

// Which of an MoE layer's choices the tuner makes: moe.parallel_mode = auto
// with parallel.ep = 1 (parallel.ep > 1 is the user's exchange degree),
// moe.pipeline_degree = auto, parallel.a2a_algo = auto.
struct TuneDims {
  bool degree = false, pipeline = false, algo = false;
  bool any() const { return degree || pipeline || algo; }
};
TuneDims tune_dims(const MoeConfig& moe, const ParallelConfig& parallel);

struct TunerOptions {
  int samples = 3;          // parallel.tuning_samples
  std::string file;         // parallel.tuning_file; empty = keep nothing
  bool writer = false;      // this rank writes the file (world rank 0)
  std::string fingerprint;  // what the decisions depend on (run_fingerprint); a table for another is ignored
};

// The settings a table's decisions depend on, in one line: the MoE shape,
// tokens per rank, the process grid, the topology keys and the emulated link.
std::string run_fingerprint(const MoeConfig& moe, int64_t model_dim, int64_t tokens_per_rank,
                            const ParallelConfig& parallel);

class Tuner {
 public:
  static constexpr int64_t kCapacityBucket = 128;

  // Loads options.file when it exists (read by rank 0 of `agree` and
  // broadcast; with `agree` the world, the ranks need no shared file system
  // for it): a table tuned for another world size or fingerprint is ignored
  // with a warning, a malformed one is a ConfigError naming the line.
  // Collective over `agree`, which should be the world: every rank then
  // takes the same decisions (tensor-parallel peers run the same plan).
  Tuner(Communicator& agree, int world_size, TunerOptions options);

  // The plan for `layer` at this capacity (the same on every rank). While
  // its key is still tuned and `trial` is true (a training forward, followed
  // by its backward), it is the next plan to time and the layer's trial is
  // open until finish_trial() (each layer has its own: a model runs every
  // forward before the backwards; its next plan() drops a trial that no
  // backward finished). With `trial` false no key is made. Local.
  ExpertPlan plan(int layer, int64_t capacity, const TuningSpace& space, bool trial);
  bool trial_open(int layer) const { return open_.count(layer) > 0; }
  // Ends the layer's open trial with this rank's seconds (agreed by MIN;
  // collective); a decision is logged and saved.
  void finish_trial(int layer, double seconds);

  // The decided plan of a key, if any.
  std::optional<ExpertPlan> decided(int layer, int64_t capacity) const;
  bool tuning() const;  // some key seen is not decided yet
  // The table as the file holds it.
  std::string table() const;
  const std::vector<std::string>& decisions() const { return log_; }  // the logged lines

 private:
  using Key = std::pair<int, int64_t>;  // (layer, capacity bucket)
  struct Entry {
    std::optional<PlanSearch> search;  // while tuning (or after, for the log)
    std::optional<ExpertPlan> choice;
    double ms = 0;  // the choice's time per forward + backward
    bool loaded = false;
  };
  void load_text(const std::string& text, const std::string& origin);
  void decide(const Key& key, Entry& entry);
  void save() const;

  Communicator& agree_;
  int world_size_;
  TunerOptions options_;
  std::map<Key, Entry> entries_;
  std::map<int, std::pair<Key, ExpertPlan>> open_;  // per layer
  std::vector<std::string> log_;
};

}  // namespace sy::par
