#include "parallel/tuner.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <iomanip>
#include <limits>
#include <sstream>

#include "core/error.hpp"
#include "core/log.hpp"

namespace sy::par {

namespace {

// Milliseconds with 3 significant digits.
std::string ms_text(double seconds) {
  std::ostringstream os;
  os << std::setprecision(3) << 1e3 * seconds << " ms";
  return os.str();
}

std::string plan_text(const TuningSpace& space, const ExpertPlan& p) {
  std::ostringstream os;
  const auto it = std::find(space.degrees.begin(), space.degrees.end(), p.degree);
  if (it != space.degrees.end() && size_t(it - space.degrees.begin()) < space.modes.size() &&
      space.modes[size_t(it - space.degrees.begin())] >= 0)
    os << "r=" << space.modes[size_t(it - space.degrees.begin())] << " ";
  os << "P=" << p.degree << " d=" << p.pipeline << " a2a=" << to_string(p.algo);
  return os.str();
}

AllToAllAlgo algo_from(const std::string& s) {
  for (const AllToAllAlgo a : {AllToAllAlgo::Linear, AllToAllAlgo::TwoDH, AllToAllAlgo::FlowSplit})
    if (s == to_string(a)) return a;
  throw ConfigError("unknown all-to-all algorithm '" + s + "'");
}

}  // namespace

TuneDims tune_dims(const MoeConfig& moe, const ParallelConfig& parallel) {
  TuneDims d;
  d.degree = moe.parallel_mode == MoeConfig::kAutoParallelMode && parallel.ep == 1;
  d.pipeline = moe.pipeline_degree == MoeConfig::kAutoPipelineDegree;
  d.algo = parallel.a2a_algo == AllToAllAlgo::Auto;
  return d;
}

std::string run_fingerprint(const MoeConfig& moe, int64_t model_dim, int64_t tokens_per_rank,
                            const ParallelConfig& p) {
  std::ostringstream os;
  os << "experts=" << moe.num_experts << " dim=" << model_dim << " hidden=" << moe.hidden_size
     << " top_k=" << moe.top_k << " capacity_factor=" << moe.capacity_factor << " router=" << to_string(moe.router)
     << " activation=" << to_string(moe.activation) << " tokens=" << tokens_per_rank << " dp=" << p.dp
     << " ep=" << p.ep << " tp=" << p.tp << " ranks_per_node=" << p.ranks_per_node
     << " ranks_per_leaf=" << p.ranks_per_leaf << " spine_paths=" << p.spine_paths << " emulate_link=";
  if (p.emulate_link.enabled()) os << p.emulate_link.gbit_per_s << "," << p.emulate_link.latency_us;
  else os << "off";
  return os.str();
}

// ---- the search ----

bool TuningSpace::contains(const ExpertPlan& plan) const {
  const auto it = std::find(degrees.begin(), degrees.end(), plan.degree);
  if (it == degrees.end()) return false;
  if (plan.degree == 1) return true;  // no exchange: d and the algorithm do not apply
  const auto& a = algos[size_t(it - degrees.begin())];
  return std::find(pipelines.begin(), pipelines.end(), plan.pipeline) != pipelines.end() &&
         std::find(a.begin(), a.end(), plan.algo) != a.end();
}

PlanSearch::PlanSearch(TuningSpace space, int samples, int warmup)
    : space_(std::move(space)), samples_(samples), warmup_(warmup) {
  SY_REQUIRE(!space_.degrees.empty() && !space_.pipelines.empty() && space_.algos.size() == space_.degrees.size(),
             "tuning space needs degrees, pipelines and one algorithm list per degree");
  SY_REQUIRE(samples_ >= 1, "tuning samples must be at least 1, got " << samples_);
  for (const auto& a : space_.algos) SY_REQUIRE(!a.empty(), "tuning space: a degree without algorithms");
}

ExpertPlan PlanSearch::base(int degree) const {
  if (degree == 1) return {1, 1, AllToAllAlgo::Linear};
  const size_t i = size_t(std::find(space_.degrees.begin(), space_.degrees.end(), degree) - space_.degrees.begin());
  const auto& algos = space_.algos[i];
  const bool has1 = std::find(space_.pipelines.begin(), space_.pipelines.end(), 1) != space_.pipelines.end();
  const bool linear = std::find(algos.begin(), algos.end(), AllToAllAlgo::Linear) != algos.end();
  return {degree, has1 ? 1 : space_.pipelines.front(), linear ? AllToAllAlgo::Linear : algos.front()};
}

std::optional<double> PlanSearch::timed(const ExpertPlan& plan, int stage) const {
  for (const Timing& t : timings_)
    if (t.plan == plan && t.stage == stage) {
      if (int(t.seconds.size()) < samples_) return std::nullopt;
      return *std::min_element(t.seconds.begin(), t.seconds.end());
    }
  return std::nullopt;
}

int PlanSearch::samples_of(const ExpertPlan& plan, int stage) const {
  for (const Timing& t : timings_)
    if (t.plan == plan && t.stage == stage) return int(t.seconds.size());
  return 0;
}

double PlanSearch::seconds(const ExpertPlan& plan) const {
  // The comparison that decided: stage 2's at the chosen degree, else stage 1's.
  return timed(plan, 2).value_or(timed(plan, 1).value_or(std::numeric_limits<double>::infinity()));
}

void PlanSearch::record(const ExpertPlan& plan, double seconds) {
  if (warmed_ < warmup_) {
    ++warmed_;
    return;
  }
  int best = 0;
  const int stage = degree_search(best) ? 1 : 2;
  for (Timing& t : timings_)
    if (t.plan == plan && t.stage == stage) {
      t.seconds.push_back(seconds);
      return;
    }
  timings_.push_back({plan, stage, {seconds}});
}

int PlanSearch::plans_timed() const {
  int n = 0;
  for (const Timing& t : timings_) n += int(t.seconds.size()) >= samples_;
  return n;
}

int PlanSearch::trials() const {
  int n = 0;
  for (const Timing& t : timings_) n += int(t.seconds.size());
  return n;
}

// Of plans that still need samples in this stage, the one with the fewest
// (the first on a tie): the samples of the plans being compared interleave,
// so a slow stretch of the machine does not fall on one plan only.
std::optional<ExpertPlan> PlanSearch::neediest(const std::vector<ExpertPlan>& plans, int stage) const {
  std::optional<ExpertPlan> out;
  int fewest = samples_;
  for (const ExpertPlan& p : plans)
    if (const int n = samples_of(p, stage); n < fewest) {
      fewest = n;
      out = p;
    }
  return out;
}

std::optional<ExpertPlan> PlanSearch::degree_search(int& best) const {
  // Replays the ternary search over the degrees, at each degree's base plan,
  // with the stage-1 timings so far.
  const std::vector<int>& D = space_.degrees;
  int lo = 0, hi = int(D.size()) - 1;
  while (hi - lo > 2) {
    const int m1 = lo + (hi - lo) / 3, m2 = hi - (hi - lo) / 3;
    const ExpertPlan p1 = base(D[size_t(m1)]), p2 = base(D[size_t(m2)]);
    if (const auto need = neediest({p1, p2}, 1)) return need;
    if (*timed(p1, 1) < *timed(p2, 1)) hi = m2 - 1;
    else lo = m1 + 1;
  }
  std::vector<ExpertPlan> last;
  for (int i = lo; i <= hi; ++i) last.push_back(base(D[size_t(i)]));
  if (const auto need = neediest(last, 1)) return need;
  best = lo;
  for (int i = lo; i <= hi; ++i)
    if (*timed(base(D[size_t(i)]), 1) < *timed(base(D[size_t(best)]), 1)) best = i;
  return std::nullopt;
}

std::vector<ExpertPlan> PlanSearch::pairs(int best) const {
  std::vector<ExpertPlan> out;
  const int P = space_.degrees[size_t(best)];
  for (const int d : space_.pipelines)
    for (const AllToAllAlgo a : space_.algos[size_t(best)]) out.push_back({P, d, a});
  return out;
}

std::optional<ExpertPlan> PlanSearch::next() const {
  // 1. The degree; 2. every (d, algorithm) at it, its plain plan timed again
  // beside the others (a model's layers get faster or slower over the first
  // steps as its router learns: plans compared are timed in the same steps).
  int best = 0;
  if (const auto need = degree_search(best)) return need;
  if (space_.degrees[size_t(best)] == 1) return std::nullopt;
  return neediest(pairs(best), 2);
}

ExpertPlan PlanSearch::fastest_so_far() const {
  std::optional<ExpertPlan> out;
  double t = std::numeric_limits<double>::infinity();
  for (const Timing& tm : timings_)
    if (int(tm.seconds.size()) >= samples_) {
      const double v = *std::min_element(tm.seconds.begin(), tm.seconds.end());
      if (v < t) t = v, out = tm.plan;
    }
  if (out) return *out;
  return next().value_or(base(space_.degrees.front()));
}

ExpertPlan PlanSearch::best() const {
  int b = 0;
  SY_REQUIRE(!degree_search(b), "tuner: the degree search has not finished");
  const int P = space_.degrees[size_t(b)];
  if (P == 1) return base(1);
  std::optional<ExpertPlan> out;
  double t = std::numeric_limits<double>::infinity();
  for (const ExpertPlan& p : pairs(b))
    if (const auto v = timed(p, 2); v && *v < t) {
      t = *v;
      out = p;
    }
  SY_REQUIRE(out.has_value(), "tuner: no plan of degree " << P << " has been timed");
  // Near-ties go to the plain plan of the degree.
  const ExpertPlan plain = base(P);
  if (const auto p = timed(plain, 2); p && *p <= t * (1.0 + kPlainMargin)) return plain;
  return *out;
}

// ---- the tuner ----

Tuner::Tuner(Communicator& agree, int world_size, TunerOptions options)
    : agree_(agree), world_size_(world_size), options_(std::move(options)) {
  SY_CHECK_AS(ConfigError, options_.samples >= 1,
              "parallel.tuning_samples = " << options_.samples << ": expected at least 1");
  if (options_.file.empty()) return;
  // Rank 0 reads; the text (or -1: no file) travels to every rank.
  std::string text;
  int64_t size = -1;
  if (agree_.rank() == 0) {
    std::ifstream in(options_.file, std::ios::binary);
    if (in) {
      std::ostringstream os;
      os << in.rdbuf();
      text = os.str();
      size = int64_t(text.size());
    }
  }
  agree_.broadcast(&size, 1, ElemType::I64, 0);
  if (size < 0) {
    SY_LOG_INFO("tuner: no table at " << options_.file << " yet; tuning in the first steps and saving it there");
    return;
  }
  text.resize(size_t(size));
  if (size > 0) agree_.broadcast(text.data(), size, ElemType::U8, 0);
  load_text(text, options_.file);
}

void Tuner::load_text(const std::string& text, const std::string& origin) {
  std::istringstream in(text);
  std::string line;
  int lineno = 0, world = -1, loaded = 0;
  std::optional<std::string> run;
  std::map<Key, Entry> entries;
  while (std::getline(in, line)) {
    ++lineno;
    auto bad = [&](const std::string& why) {
      return ConfigError("parallel.tuning_file " + origin + " line " + std::to_string(lineno) + ": " + why +
                         " (delete the file to tune afresh)");
    };
    const size_t first = line.find_first_not_of(" \t\r");
    if (first == std::string::npos || line[first] == '#') continue;  // blank (CRLF too) or a comment
    line = line.substr(first, line.find_last_not_of(" \t\r") + 1 - first);
    std::istringstream ls(line);
    std::string word;
    ls >> word;
    auto at_end = [&] { return !ls.fail() && (ls >> std::ws).eof(); };
    if (word == "world") {
      if (world >= 0) throw bad("a second 'world' line");
      if (!(ls >> world) || world < 1 || !at_end()) throw bad("expected 'world N'");
      continue;
    }
    if (word == "run") {
      if (run) throw bad("a second 'run' line");
      std::string rest;
      std::getline(ls >> std::ws, rest);
      run = rest;
      continue;
    }
    if (word != "layer") throw bad("expected 'world', 'run' or 'layer', got '" + word + "'");
    int layer = -1, degree = 0, d = 0;
    int64_t bucket = -1;
    std::string k1, k2, k3, k4, k5, algo;
    double ms = -1;
    ls >> layer >> k1 >> bucket >> k2 >> degree >> k3 >> d >> k4 >> algo >> k5 >> ms;
    if (!at_end() || layer < 0 || bucket < 0 || degree < 1 || k1 != "bucket" || k2 != "degree" || k3 != "d" ||
        k4 != "a2a" || k5 != "ms" || !(d == 1 || d == 2 || d == 4 || d == 8) || !(ms >= 0))
      throw bad("expected 'layer L bucket B degree P d D a2a ALGO ms T'");
    Entry e;
    try {
      e.choice = ExpertPlan{degree, d, algo_from(algo)};
    } catch (const ConfigError& err) {
      throw bad(err.what());
    }
    if (degree == 1 && !(*e.choice == ExpertPlan{1, 1, AllToAllAlgo::Linear}))
      throw bad("degree 1 exchanges no tokens: expected 'd 1 a2a linear'");
    if (entries.count({layer, bucket})) throw bad("a second decision for layer " + std::to_string(layer) +
                                                  " bucket " + std::to_string(bucket));
    e.ms = ms;
    e.loaded = true;
    entries[{layer, bucket}] = std::move(e);
    ++loaded;
  }
  std::string mismatch;
  if (world != world_size_)
    mismatch = "was tuned for " + (world < 0 ? std::string("an unknown number of") : std::to_string(world)) +
               " ranks, this run has " + std::to_string(world_size_);
  else if (run.value_or("") != options_.fingerprint)
    mismatch = "was tuned for another run (" + run.value_or("no 'run' line") + "; this run: " +
               options_.fingerprint + ")";
  if (!mismatch.empty()) {
    if (agree_.rank() == 0) SY_LOG_WARN("tuner: " << origin << " " << mismatch << "; ignoring it and tuning afresh");
    return;
  }
  entries_ = std::move(entries);
  SY_LOG_INFO("tuner: loaded " << loaded << " decision(s) from " << origin);
}

ExpertPlan Tuner::plan(int layer, int64_t capacity, const TuningSpace& space, bool trial) {
  open_.erase(layer);
  const int64_t bucket = std::max<int64_t>(0, capacity) / kCapacityBucket;
  const Key key{layer, bucket};
  auto it = entries_.find(key);
  if (it != entries_.end() && it->second.choice && it->second.loaded && !space.contains(*it->second.choice)) {
    if (agree_.rank() == 0)
      SY_LOG_WARN("tuner: layer " << layer << " capacity bucket " << bucket << ": the saved plan "
                                  << plan_text(space, *it->second.choice)
                                  << " is not available in this run; tuning it afresh");
    entries_.erase(it);
    it = entries_.end();
  }
  if (it != entries_.end() && it->second.choice) return *it->second.choice;
  if (!trial) {
    // Evaluation or generation: the fastest plan so far, else where the
    // search starts; no key is made for a capacity only they see.
    if (it != entries_.end()) return it->second.search->fastest_so_far();
    return *PlanSearch(space).next();
  }
  Entry& e = entries_[key];
  if (!e.search) e.search.emplace(space, options_.samples, options_.samples);
  const std::optional<ExpertPlan> next = e.search->next();
  SY_CHECK_AS(Error, next.has_value(), "internal: tuner key without a decision has nothing left to time");
  open_[layer] = std::make_pair(key, *next);
  return *next;
}

void Tuner::finish_trial(int layer, double seconds) {
  const auto it = open_.find(layer);
  SY_REQUIRE(it != open_.end(), "tuner: finish_trial for layer " << layer << " without an open trial");
  const auto [key, plan] = it->second;
  open_.erase(it);
  agree_.allreduce(&seconds, &seconds, 1, ElemType::F64, ReduceOp::Min);
  Entry& e = entries_.at(key);
  e.search->record(plan, seconds);
  if (!e.search->next()) decide(key, e);
}

void Tuner::decide(const Key& key, Entry& e) {
  const PlanSearch& s = *e.search;
  e.choice = s.best();
  e.ms = 1e3 * s.seconds(*e.choice);
  const TuningSpace& space = s.space();
  // The plain plan for comparison: d = 1 linear at the chosen degree.
  const ExpertPlan plain{e.choice->degree, 1, AllToAllAlgo::Linear};
  std::ostringstream os;
  os << "tuner: layer " << key.first << ", capacity " << key.second * kCapacityBucket << "-"
     << (key.second + 1) * kCapacityBucket - 1 << ": " << plan_text(space, *e.choice) << ", "
     << ms_text(s.seconds(*e.choice)) << " per forward+backward";
  if (!(plain == *e.choice) && std::isfinite(s.seconds(plain)))
    os << " (d=1 linear " << ms_text(s.seconds(plain)) << ", " << std::fixed << std::setprecision(2)
       << s.seconds(plain) / s.seconds(*e.choice) << "x)";
  os << "; " << s.plans_timed() << " plan timings, " << s.trials() << " trials after " << s.warmup() << " warm-up";
  log_.push_back(os.str());
  SY_LOG_INFO(os.str());
  save();
}

std::optional<ExpertPlan> Tuner::decided(int layer, int64_t capacity) const {
  const auto it = entries_.find({layer, std::max<int64_t>(0, capacity) / kCapacityBucket});
  if (it == entries_.end()) return std::nullopt;
  return it->second.choice;
}

bool Tuner::tuning() const {
  for (const auto& [k, e] : entries_)
    if (!e.choice) return true;
  return false;
}

std::string Tuner::table() const {
  std::ostringstream os;
  os << "# switchyard tuning table (parallel.tuning_file): per MoE layer and capacity bucket\n"
        "# (capacity / "
     << kCapacityBucket
     << "), the exchange degree P, pipeline degree d and all-to-all algorithm,\n"
        "# and the measured milliseconds per forward + backward. Delete it to tune afresh.\n";
  os << "world " << world_size_ << "\n";
  os << "run " << options_.fingerprint << "\n";
  for (const auto& [k, e] : entries_)
    if (e.choice)
      os << "layer " << k.first << " bucket " << k.second << " degree " << e.choice->degree << " d "
         << e.choice->pipeline << " a2a " << to_string(e.choice->algo) << " ms " << std::setprecision(6) << e.ms
         << "\n";
  return os.str();
}

void Tuner::save() const {
  if (options_.file.empty() || !options_.writer) return;
  // Written whole to a temporary and renamed, so a reader never sees half a table.
  const std::string tmp = options_.file + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out << table();
    out.flush();
    if (!out) {
      SY_LOG_WARN("tuner: cannot write " << tmp << "; the decisions stay in this run only");
      return;
    }
  }
  if (std::rename(tmp.c_str(), options_.file.c_str()) != 0)
    SY_LOG_WARN("tuner: cannot rename " << tmp << " to " << options_.file << "; the decisions stay in this run only");
}

}  // namespace sy::par
