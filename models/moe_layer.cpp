#include "models/moe_layer.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <numeric>
#include <random>
#include <sstream>

#include "core/dtype.hpp"
#include "core/error.hpp"
#include "core/gemm.hpp"
#include "core/rng.hpp"
#include "core/thread_pool.hpp"

namespace sy::moe {

double MoeLayerStats::load_max_over_mean() const {
  if (tokens_per_expert.empty()) return 0.0;
  const double total = std::accumulate(tokens_per_expert.begin(), tokens_per_expert.end(), 0.0);
  if (total == 0.0) return 0.0;
  const double mx = static_cast<double>(*std::max_element(tokens_per_expert.begin(), tokens_per_expert.end()));
  return mx / (total / static_cast<double>(tokens_per_expert.size()));
}

namespace {

using Clock = std::chrono::steady_clock;

class Stopwatch {
 public:
  Stopwatch(bool on, double& sink) : on_(on), sink_(sink) {
    if (on_) t0_ = Clock::now();
  }
  ~Stopwatch() {
    if (on_) sink_ += std::chrono::duration<double>(Clock::now() - t0_).count();
  }

 private:
  bool on_;
  double& sink_;
  Clock::time_point t0_;
};

template <typename T>
T round_to_bf16(T v) {
  return static_cast<T>(bf16_to_float(float_to_bf16(static_cast<float>(v))));
}

// Most slots a call can produce (sizes the slot buffers).
int64_t max_slots_per_token(const MoeConfig& c) {
  switch (c.router) {
    case RouterKind::TopP:
    case RouterKind::ExpertChoice: return c.num_experts;
    case RouterKind::NullExperts: return c.top_k;
    default: return c.top_k;
  }
}

}  // namespace

template <typename T>
MoeLayer<T>::MoeLayer(const MoeConfig& config, int64_t model_dim, int64_t max_tokens, int64_t seq_len, uint64_t seed,
                      ExpertComm<T>* comm)
    : config_(config),
      num_experts_(config.num_experts),
      shape_{config.num_experts, model_dim, config.hidden_size, config.activation},
      comm_(comm),
      max_tokens_(max_tokens),
      seed_(seed) {
  SY_REQUIRE(model_dim > 0, "model_dim must be positive, got " << model_dim);
  SY_REQUIRE(max_tokens > 0, "max_tokens must be positive, got " << max_tokens);
  SY_REQUIRE(config.num_experts > 0 && config.hidden_size > 0, "num_experts and hidden_size must be positive");
  if (comm_ && comm_->size() <= 1) comm_ = nullptr;
  const bool swiglu = config.activation == ActivationKind::SwiGLU;
  layout_ = ExpertLayout(config.num_experts, config.hidden_size, swiglu, comm_ ? comm_->size() : 1,
                         comm_ ? comm_->rank() : 0);
  if (!comm_) {
    sized_degrees_ = {1};  // one rank: every mode is the same (a multi-rank config still loads)
  } else if (config.parallel_mode >= 0) {
    sized_degrees_ = {layout_.degree_for_mode(config.parallel_mode)};
  } else {
    sized_degrees_ = layout_.valid_degrees();
  }
  degree_ = !comm_ || config.parallel_mode >= 0 ? sized_degrees_[0] : layout_.degree_for_mode(1);
  router_ = make_router<T>(config, seed);
  num_logits_ = router_->num_logits();
  balancer_ = std::make_unique<Balancer<T>>(config, seq_len);

  const int64_t M = model_dim, H = config.hidden_size, H1 = shape_.h1();
  const int64_t S = config.num_shared_experts, L = num_logits_;
  const int64_t nu = layout_.units_per_rank();
  if (L > 0) add_param("router_weight", L * M);
  add_param("expert_w1", nu * layout_.unit_w1_size(M));
  add_param("expert_w2", nu * layout_.unit_w2_size(M));
  if (S > 0) {
    add_param("shared_w1", S * H1 * M);
    add_param("shared_w2", M * S * H);
  }
  params_.assign(views_.empty() ? 0 : views_.back().offset + views_.back().size, T(0));
  grads_.assign(params_.size(), T(0));
  router_w_ = param("router_weight");
  w1_ = param("expert_w1");
  w2_ = param("expert_w2");
  shared_w1_ = param("shared_w1");
  shared_w2_ = param("shared_w2");
  router_dw_ = grad("router_weight");
  dw1_ = grad("expert_w1");
  dw2_ = grad("expert_w2");
  shared_dw1_ = grad("shared_w1");
  shared_dw2_ = grad("shared_w2");
  block_ = (w2_ - w1_) + param_size("expert_w2");
  init_params(seed);

  // Dispatched rows: every real slot at most once. Per mode: the expert side
  // receives from P peers at most their capacity for each local expert (or
  // every row they have, dropless); sliced experts return dup partial rows.
  const int64_t max_slots = max_tokens * max_slots_per_token(config);
  max_rows_ = max_slots;
  // A source sends an expert each token at most once, and at most its capacity
  // when capped (expert_choice included: it chooses within the capacity).
  const int64_t Tm = max_tokens;
  const bool capped = config.capacity_factor != 0;
  const int64_t cap = capped ? std::min(Tm, capacity_for(Tm, Tm)) : Tm;
  int64_t piece_w = 0, gathered = 0, part_rows = 0;
  int max_degree = 1;
  int64_t max_local = 1;
  for (const int P : sized_degrees_) {
    const ExpertMode m = layout_.mode(P);
    const int64_t H1l = swiglu ? 2 * m.local_hidden : m.local_hidden;
    if (m.gather > 1) {
      // Whole experts run straight from the gathered blocks: no assembled piece.
      if (layout_.slices() > 1) piece_w = std::max(piece_w, m.local_experts * (H1l + m.local_hidden) * M);
      gathered = std::max(gathered, int64_t(m.gather) * block_);
    }
    if (P > 1) ex_rows_ = std::max(ex_rows_, int64_t(P) * std::min(max_rows_, m.local_experts * cap));
    if (m.dup > 1) part_rows = std::max(part_rows, int64_t(m.dup) * max_rows_);
    max_degree = std::max(max_degree, P);
    max_local = std::max(max_local, m.local_experts);
  }
  const int64_t hrows = std::max(max_rows_, ex_rows_);
  // One function computes every size: the list below (a piece's hidden never
  // exceeds the expert's H).
  const std::vector<std::pair<T**, int64_t>> plan = {
      {&router_in_, Tm * M},        {&router_wq_, L * M},         {&logits_, Tm * L},
      {&dprobs_aux_, Tm * L},       {&dlogits_aux_, Tm * L},      {&dprobs_, Tm * L},
      {&dlogits_, Tm * L},          {&xd_, max_rows_ * M},        {&h1_, hrows * H1},
      {&act_, hrows * H},        {&y_, max_rows_ * M},         {&dy_, max_rows_ * M},
      {&dact_, hrows * H},          {&dh1_, hrows * H1},       {&dxd_, max_rows_ * M},
      {&shared_h1_, Tm * S * H1},   {&shared_act_, Tm * S * H},   {&shared_dact_, Tm * S * H},
      {&shared_dh1_, Tm * S * H1},  {&router_dx_, Tm * M},        {&ex_x_, ex_rows_ * M},
      {&ex_y_, ex_rows_ * M},       {&ex_dx_, ex_rows_ * M},      {&stage_, ex_rows_ * M},
      {&part_, part_rows * M},      {&ret_, config.pipeline_degree != 1 ? ex_rows_ * M : 0},
      {&gathered_, gathered},       {&pw1_, piece_w},
      {&pdw1_, std::max(piece_w, gathered)}, {&reduced_, gathered > 0 ? block_ : 0}};
  int64_t total = 0;
  for (const auto& [ptr, size] : plan) total += (size + 15) / 16 * 16;  // 64-byte granules
  work_.assign(total, T(0));
  int64_t at = 0;
  for (const auto& [ptr, size] : plan) {
    *ptr = work_.data() + at;
    at += (size + 15) / 16 * 16;
  }
  dweight_.resize(max_slots);
  slot_row_.resize(max_slots);
  bucket_.resize(max_slots);
  expert_offset_.resize(num_experts_);
  expert_count_.resize(num_experts_);
  bucket_begin_.resize(num_experts_ + 1);
  stats_.routed_per_expert.resize(num_experts_);
  stats_.tokens_per_expert.resize(num_experts_);
  handle_.send_counts.resize(max_degree * max_local);
  handle_.ex_counts.resize(max_degree * max_local);
  handle_.ex_offset.resize(max_local);
  handle_.ex_count.resize(max_local);
  for (auto* v : {&handle_.send_rows, &handle_.send_displs, &handle_.recv_rows, &handle_.recv_displs,
                  &handle_.part_displs})
    v->resize(max_degree);
  constexpr int kMaxChunks = 8;
  for (auto* v : {&handle_.chunk_send_begin, &handle_.chunk_send_rows, &handle_.chunk_recv_begin,
                  &handle_.chunk_recv_rows})
    v->resize(kMaxChunks * max_degree);
  handle_.chunk_ex_offset.resize(kMaxChunks * max_local);
  handle_.chunk_ex_count.resize(kMaxChunks * max_local);
  pending_.reserve(2 * kMaxChunks);
  block_offset_.resize(max_local);
  block_count_.resize(max_local);
  scratch_counts_.resize(4 * size_t(max_degree));
  if (config.pipeline_degree != MoeConfig::kAutoPipelineDegree) set_pipeline_degree(config.pipeline_degree);
  // Warm the router output's vectors to their largest size.
  routing_.probs.reserve(Tm * L);
  routing_.token_begin.reserve(Tm + 1);
  routing_.expert.reserve(max_slots);
  routing_.weight.reserve(max_slots);
  routing_.score.reserve(max_slots);
  mode_ = layout_.mode(degree_);
}

template <typename T>
void MoeLayer<T>::set_expert_degree(int P) {
  if (std::find(sized_degrees_.begin(), sized_degrees_.end(), P) == sized_degrees_.end()) {
    std::ostringstream sized;
    for (int v : sized_degrees_) sized << (sized.tellp() > 0 ? ", " : "") << v;
    SY_CHECK_AS(ConfigError, false,
                "expert-parallel degree " << P << " is not available: this layer (" << num_experts_
                                          << " experts on " << layout_.world()
                                          << " ranks) was sized for degrees " << sized.str()
                                          << " (moe.parallel_mode = auto sizes it for every valid one)");
  }
  degree_ = P;
}

template <typename T>
MoeLayer<T>::~MoeLayer() = default;

template <typename T>
void MoeLayer<T>::set_pipeline_degree(int d) {
  SY_CHECK_AS(ConfigError, d == 1 || d == 2 || d == 4 || d == 8,
              "moe.pipeline_degree = " << d << " is not valid: 1, 2, 4 or 8");
  SY_CHECK_AS(ConfigError, d == 1 || config_.pipeline_degree != 1,
              "moe.pipeline_degree = " << d << ": this layer was built with moe.pipeline_degree = 1 (no buffer "
                                          "for pipelining); build it with auto or the degree");
  pipeline_degree_ = d;
}

template <typename T>
void MoeLayer<T>::set_alltoall(AllToAllAlgo algo) {
  if (algo == AllToAllAlgo::Auto) algo = AllToAllAlgo::Linear;
  SY_CHECK_AS(ConfigError, !comm_ || comm_->supports(degree_, algo),
              "parallel.a2a_algo = " << to_string(algo) << " cannot run the token exchange over " << degree_
                                     << " ranks: 2dh needs whole nodes (parallel.ranks_per_node) and flowsplit "
                                        "whole leaves (parallel.ranks_per_leaf) in the exchange group");
  a2a_algo_ = algo;
}

template <typename T>
void MoeLayer<T>::set_tuner(par::Tuner* tuner, int layer_id, par::TuneDims dims) {
  tuner_ = nullptr;
  if (!comm_ || !tuner) return;
  par::TuningSpace space;
  space.degrees = dims.degree ? sized_degrees_ : std::vector<int>{degree_};
  const int64_t EW = std::min<int64_t>(num_experts_, layout_.world());
  const bool pipelines = dims.pipeline && config_.pipeline_degree == MoeConfig::kAutoPipelineDegree;
  space.pipelines = pipelines ? std::vector<int>{1, 2, 4, 8} : std::vector<int>{pipeline_degree_};
  const int slots = 2 * *std::max_element(space.pipelines.begin(), space.pipelines.end());
  for (const int P : space.degrees) {
    // DESIGN.md's r, or -1 for a degree between two r (P not a multiple of min(E, W)).
    space.modes.push_back(P == 1 ? 0 : P % EW == 0 ? static_cast<int>(P / EW) : -1);
    std::vector<AllToAllAlgo> algos;
    for (const AllToAllAlgo a : {AllToAllAlgo::Linear, AllToAllAlgo::TwoDH, AllToAllAlgo::FlowSplit})
      if (dims.algo ? a == AllToAllAlgo::Linear || comm_->distinct(P, a) : a == a2a_algo_ && comm_->supports(P, a))
        algos.push_back(a);
    if (algos.empty()) algos.push_back(AllToAllAlgo::Linear);  // the fixed algorithm cannot run at P
    // Every exchange a trial may run is built now, so that no trial times its set-up.
    if (P > 1)
      for (const AllToAllAlgo a : algos) comm_->prepare(P, a, slots);
    space.algos.push_back(std::move(algos));
  }
  const bool anything = space.degrees.size() > 1 || space.pipelines.size() > 1 ||
                        std::any_of(space.algos.begin(), space.algos.end(), [](const auto& a) { return a.size() > 1; });
  tuner_ = anything ? tuner : nullptr;
  tuner_layer_ = layer_id;
  tuning_space_ = std::move(space);
}

template <typename T>
void MoeLayer<T>::add_param(const std::string& name, int64_t size) {
  const int64_t offset = views_.empty() ? 0 : views_.back().offset + (views_.back().size + 15) / 16 * 16;
  views_.push_back({name, offset, size});
}

template <typename T>
T* MoeLayer<T>::param(const std::string& name) {
  for (const auto& v : views_)
    if (v.name == name) return params_.data() + v.offset;
  return nullptr;
}

template <typename T>
T* MoeLayer<T>::grad(const std::string& name) {
  for (const auto& v : views_)
    if (v.name == name) return grads_.data() + v.offset;
  return nullptr;
}

template <typename T>
int64_t MoeLayer<T>::param_size(const std::string& name) const {
  for (const auto& v : views_)
    if (v.name == name) return v.size;
  return 0;
}

template <typename T>
void MoeLayer<T>::zero_grads() {
  std::fill(grads_.begin(), grads_.end(), T(0));
}

template <typename T>
void MoeLayer<T>::init_params(uint64_t seed) {
  std::mt19937_64 rng(seed);
  const int64_t M = shape_.model_dim, H = config_.hidden_size, H1 = shape_.h1();
  auto fill_uniform = [](std::mt19937_64& g, T* p, int64_t n, double bound) {
    std::uniform_real_distribution<double> dist(-bound, bound);
    for (int64_t i = 0; i < n; ++i) p[i] = static_cast<T>(dist(g));
  };
  // Uniform(+-1/sqrt(fan_in)), as a linear layer; the router starts small so
  // early routing is near uniform.
  if (router_w_) fill_uniform(rng, router_w_, param_size("router_weight"), 0.1 / std::sqrt(double(M)));
  if (shared_w1_) {
    fill_uniform(rng, shared_w1_, param_size("shared_w1"), 1.0 / std::sqrt(double(M)));
    fill_uniform(rng, shared_w2_, param_size("shared_w2"), 1.0 / std::sqrt(double(H)));
  }
  // Each expert draws from its own stream, so a rank draws only the experts
  // it stores a unit of, and the units of all ranks together are exactly the
  // one-rank experts of the same seed.
  std::vector<T> full_w1(H1 * M), full_w2(M * H);
  const bool swiglu = config_.activation == ActivationKind::SwiGLU;
  const int64_t nu = layout_.units_per_rank(), Hu = layout_.unit_hidden();
  int64_t drawn = -1;
  for (int64_t j = 0; j < nu; ++j) {
    const int64_t u = layout_.first_unit() + j, e = layout_.unit_expert(u);
    if (e != drawn) {
      std::mt19937_64 expert_rng(splitmix64(seed ^ splitmix64(0x6578706572740000ull + uint64_t(e))));
      fill_uniform(expert_rng, full_w1.data(), H1 * M, 1.0 / std::sqrt(double(M)));
      fill_uniform(expert_rng, full_w2.data(), M * H, 1.0 / std::sqrt(double(H)));
      drawn = e;
    }
    copy_unit(true, w1_ + j * layout_.unit_w1_size(M), w2_ + j * layout_.unit_w2_size(M), full_w1.data(),
              full_w2.data(), layout_.unit_slice(u), Hu, H, M, swiglu);
  }
}

template <typename T>
int64_t MoeLayer<T>::capacity_for(int64_t num_tokens, int64_t max_load) const {
  const double c = config_.capacity_factor;
  const double nominal = double(config_.top_k) * double(num_tokens) / double(num_experts_);
  if (c > 0) return static_cast<int64_t>(std::ceil(nominal * c - 1e-9));
  if (c == 0) return max_load;
  return std::min<int64_t>(max_load, static_cast<int64_t>(std::ceil(nominal * -c - 1e-9)));
}

// Buckets the real slots by expert (stable: token order), keeps up to the
// capacity per expert (by position or by score), and assigns each kept slot
// its row in the packed dispatch buffer.
template <typename T>
void MoeLayer<T>::apply_capacity(int64_t num_tokens) {
  const int64_t E = num_experts_;
  const int64_t S = routing_.num_slots();
  std::fill(bucket_begin_.begin(), bucket_begin_.end(), 0);
  int64_t nulls = 0;
  for (int64_t s = 0; s < S; ++s) {
    const int32_t e = routing_.expert[s];
    if (e < E) ++bucket_begin_[e + 1];
    else ++nulls;
  }
  for (int64_t e = 0; e < E; ++e) {
    stats_.routed_per_expert[e] = bucket_begin_[e + 1];
    bucket_begin_[e + 1] += bucket_begin_[e];
  }
  {
    std::vector<int64_t>& fill = expert_offset_;  // reused as a cursor here
    std::copy(bucket_begin_.begin(), bucket_begin_.end() - 1, fill.begin());
    for (int64_t s = 0; s < S; ++s) {
      const int32_t e = routing_.expert[s];
      if (e < E) bucket_[fill[e]++] = s;
    }
  }
  int64_t max_load = 0;
  for (int64_t e = 0; e < E; ++e) max_load = std::max(max_load, stats_.routed_per_expert[e]);
  // The largest load and token count over the group (one reduction): every
  // rank's capacity for the same largest load, and the tuner's key from
  // values every rank shares.
  int64_t agreed[2] = {max_load, num_tokens};
  if (capacity_reduce_) capacity_reduce_(agreed, 2);
  max_load = agreed[0];
  // expert_choice already applied its capacity when choosing.
  const int64_t capacity =
      config_.router == RouterKind::ExpertChoice ? max_load : capacity_for(num_tokens, max_load);
  tuning_capacity_ = config_.router == RouterKind::ExpertChoice ? max_load : capacity_for(agreed[1], max_load);

  std::fill(slot_row_.begin(), slot_row_.begin() + S, int64_t(-1));
  int64_t row = 0, dropped = 0;
  for (int64_t e = 0; e < E; ++e) {
    int64_t* first = bucket_.data() + bucket_begin_[e];
    int64_t* last = bucket_.data() + bucket_begin_[e + 1];
    const int64_t routed = last - first;
    const int64_t keep = std::min(routed, capacity);
    if (keep < routed && config_.drop_policy == DropPolicy::Score) {
      // Highest scores first; ties keep token order.
      std::stable_sort(first, last, [&](int64_t a, int64_t b) { return routing_.score[a] > routing_.score[b]; });
      std::sort(first, first + keep);  // kept slots back in token order
    }
    expert_offset_[e] = row;
    expert_count_[e] = keep;
    for (int64_t j = 0; j < keep; ++j) slot_row_[first[j]] = row++;
    dropped += routed - keep;
    stats_.tokens_per_expert[e] = keep;
  }
  SY_CHECK_AS(Error, row <= max_rows_, "internal: dispatched rows " << row << " exceed the workspace " << max_rows_);
  stats_.capacity = capacity;
  stats_.routed_slots = S - nulls;
  stats_.dropped_slots = dropped;
  stats_.null_slots = nulls;
  stats_.experts_per_token = num_tokens ? double(row) / double(num_tokens) : 0.0;
}

template <typename T>
double MoeLayer<T>::forward(const T* x, const int32_t* token_ids, int64_t num_tokens, T* out) {
  SY_REQUIRE(x != nullptr && out != nullptr, "MoE forward needs x and out");
  SY_REQUIRE(num_tokens >= 1 && num_tokens <= max_tokens_,
             "MoE forward got " << num_tokens << " tokens; this layer was sized for 1.." << max_tokens_);
  const int64_t M = shape_.model_dim, L = num_logits_, Tn = num_tokens;
  const int64_t S_shared = config_.num_shared_experts;
  ThreadPool& pool = compute_pool();
  const auto started = std::chrono::steady_clock::now();
  x_ = x;
  num_tokens_ = Tn;
  stats_.num_tokens = Tn;

  // 1. Router logits (T, L) = router_in (T, M) W_r^T.
  BalanceParts parts;
  double router_loss = 0.0;
  {
    Stopwatch sw(timing_, times_.router_s);
    if (L > 0) {
      const bool bf16 = config_.router_dtype == DType::BF16;
      const bool jitter = config_.jitter > 0.0 && training_;
      if (jitter || bf16) {
        jitter_seed_ = splitmix64(seed_ ^ splitmix64(noise_stream_));
        pool.parallel_for(Tn, 64, [&](int64_t t0, int64_t t1) {
          for (int64_t i = t0 * M; i < t1 * M; ++i) {
            const T v = jitter ? x[i] * jitter_noise(i) : x[i];
            router_in_[i] = bf16 ? round_to_bf16(v) : v;
          }
        });
      }
      router_input_ = (jitter || bf16) ? router_in_ : x;
      for (int64_t i = 0; i < L * M; ++i) router_wq_[i] = bf16 ? round_to_bf16(router_w_[i]) : router_w_[i];
      gemm<T>(Trans::N, Trans::T, Tn, L, M, T(1), router_input_, M, router_wq_, M, T(0), logits_, L);
    }
    router_->route(L > 0 ? logits_ : nullptr, token_ids, Tn, capacity_for(Tn, Tn), routing_);
    SY_CHECK_AS(Error, routing_.num_tokens == Tn, "router " << router_->name() << " returned "
                                                            << routing_.num_tokens << " tokens, expected " << Tn);
    if (L > 0) {
      std::fill(dprobs_aux_, dprobs_aux_ + Tn * L, T(0));
      std::fill(dlogits_aux_, dlogits_aux_ + Tn * L, T(0));
    }
    parts = balancer_->forward_backward(routing_, L > 0 ? logits_ : nullptr, dprobs_aux_, dlogits_aux_);
    if (L > 0) router_loss = router_->aux_loss(routing_, dprobs_aux_);
  }
  stats_.balance_loss = parts.balance;
  stats_.z_loss = parts.z;
  stats_.router_loss = router_loss;

  // 2. Capacity and 3. dispatch: copy each kept slot's token row.
  const int64_t* token_begin = routing_.token_begin.data();
  {
    Stopwatch sw(timing_, times_.dispatch_s);
    apply_capacity(Tn);
    if (tuner_) {
      // The tuner's plan for this capacity (a trial while its key is tuned).
      const par::ExpertPlan plan = tuner_->plan(tuner_layer_, tuning_capacity_, tuning_space_, training_);
      degree_ = plan.degree;
      if (plan.degree > 1) {
        pipeline_degree_ = plan.pipeline;
        a2a_algo_ = plan.algo;
      }
    }
    pool.parallel_for(Tn, 16, [&](int64_t t0, int64_t t1) {
      for (int64_t t = t0; t < t1; ++t)
        for (int64_t s = token_begin[t]; s < token_begin[t + 1]; ++s)
          if (const int64_t r = slot_row_[s]; r >= 0) std::copy(x + t * M, x + (t + 1) * M, xd_ + r * M);
    });
  }

  // 4. Experts (and the shared experts, on every token).
  {
    Stopwatch sw(timing_, times_.experts_s);
    experts_stage_forward();
    if (S_shared > 0) {
      // The shared experts are one expert of hidden S*H over every token; its
      // output goes straight into out and combine adds the routed part.
      const int64_t first = 0;
      experts_forward(shared_shape(), &first, &Tn, x, shared_w1_, shared_w2_, shared_h1_, shared_act_, out);
    }
  }

  // 5. Combine: out[t] (+)= sum_s weight_s * y[row_s].
  {
    Stopwatch sw(timing_, times_.combine_s);
    const T* weight = routing_.weight.data();
    const bool add = S_shared > 0;
    pool.parallel_for(Tn, 16, [&](int64_t t0, int64_t t1) {
      for (int64_t t = t0; t < t1; ++t) {
        T* o = out + t * M;
        if (!add) std::fill(o, o + M, T(0));
        for (int64_t s = token_begin[t]; s < token_begin[t + 1]; ++s) {
          const int64_t r = slot_row_[s];
          if (r < 0) continue;
          const T w = weight[s];
          const T* yr = y_ + r * M;
          for (int64_t j = 0; j < M; ++j) o[j] += w * yr[j];
        }
      }
    });
  }
  if (tuner_ && tuner_->trial_open(tuner_layer_))
    trial_forward_s_ = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  return parts.balance + parts.z + router_loss;
}

template <typename T>
void MoeLayer<T>::backward(const T* dout, T* dx) {
  SY_REQUIRE(x_ != nullptr, "MoE backward called before forward");
  SY_REQUIRE(dout != nullptr && dx != nullptr, "MoE backward needs dout and dx");
  const int64_t M = shape_.model_dim, L = num_logits_, Tn = num_tokens_;
  const int64_t S_shared = config_.num_shared_experts;
  ThreadPool& pool = compute_pool();
  const auto started = std::chrono::steady_clock::now();
  const int64_t* token_begin = routing_.token_begin.data();
  const T* weight = routing_.weight.data();
  T* dweight = dweight_.data();

  // 1. Combine backward: dweight_s = <dout_t, y_row>, dy_row = weight_s * dout_t.
  {
    Stopwatch sw(timing_, times_.combine_s);
    pool.parallel_for(Tn, 16, [&](int64_t t0, int64_t t1) {
      for (int64_t t = t0; t < t1; ++t) {
        const T* g = dout + t * M;
        for (int64_t s = token_begin[t]; s < token_begin[t + 1]; ++s) {
          const int64_t r = slot_row_[s];
          if (r < 0) {
            dweight[s] = T(0);
            continue;
          }
          const T w = weight[s];
          const T* yr = y_ + r * M;
          T* dyr = dy_ + r * M;
          T dot = T(0);
          for (int64_t j = 0; j < M; ++j) {
            dot += g[j] * yr[j];
            dyr[j] = w * g[j];
          }
          dweight[s] = dot;
        }
      }
    });
  }

  // 2. Experts backward; the shared experts write dx first.
  {
    Stopwatch sw(timing_, times_.experts_s);
    experts_stage_backward();
    if (S_shared > 0) {
      const int64_t first = 0;
      experts_backward(shared_shape(), &first, &Tn, x_, shared_w1_, shared_w2_, shared_h1_, shared_act_, dout,
                       shared_dact_, shared_dh1_, dx, shared_dw1_, shared_dw2_);
    }
  }

  // 3. Router backward: dlogits from the combine weights and the aux losses,
  //    then dx_router = dlogits W_r (times the jitter noise), dW_r += dlogits^T router_in.
  {
    Stopwatch sw(timing_, times_.router_s);
    if (L > 0) {
      std::copy(dprobs_aux_, dprobs_aux_ + Tn * L, dprobs_);
      router_->weight_backward(routing_, dweight, dprobs_);
      router_->probs_backward(routing_, dprobs_, dlogits_);
      for (int64_t i = 0; i < Tn * L; ++i) dlogits_[i] += dlogits_aux_[i];
      gemm<T>(Trans::T, Trans::N, L, M, Tn, T(1), dlogits_, L, router_input_, M, T(1), router_dw_, M);
      gemm<T>(Trans::N, Trans::N, Tn, M, L, T(1), dlogits_, L, router_wq_, M, T(0), router_dx_, M);
      if (config_.jitter > 0.0 && training_) {
        // router_in = x * noise (bf16 rounding is straight-through): d/dx multiplies by the noise.
        pool.parallel_for(Tn, 64, [&](int64_t t0, int64_t t1) {
          for (int64_t i = t0 * M; i < t1 * M; ++i) router_dx_[i] *= jitter_noise(i);
        });
      }
    }
  }

  // 4. Un-dispatch: dx[t] = (shared part) + router part + sum over kept slots of dxd[row].
  {
    Stopwatch sw(timing_, times_.dispatch_s);
    const bool add = S_shared > 0;
    pool.parallel_for(Tn, 16, [&](int64_t t0, int64_t t1) {
      for (int64_t t = t0; t < t1; ++t) {
        T* d = dx + t * M;
        if (L > 0) {
          const T* rd = router_dx_ + t * M;
          if (add) for (int64_t j = 0; j < M; ++j) d[j] += rd[j];
          else std::copy(rd, rd + M, d);
        } else if (!add) {
          std::fill(d, d + M, T(0));
        }
        for (int64_t s = token_begin[t]; s < token_begin[t + 1]; ++s) {
          const int64_t r = slot_row_[s];
          if (r < 0) continue;
          const T* g = dxd_ + r * M;
          for (int64_t j = 0; j < M; ++j) d[j] += g[j];
        }
      }
    });
  }
  {
    Stopwatch sw(timing_, times_.experts_s);  // the expert stage's reduce-scatter completes here
    end_reduce_piece();
  }
  if (tuner_ && tuner_->trial_open(tuner_layer_)) {
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    tuner_->finish_trial(tuner_layer_, trial_forward_s_ + seconds);
  }
}

// The mode's piece of the experts: this rank's own units (Gs = 1), or the
// units of its gather group, assembled per local expert.
template <typename T>
void MoeLayer<T>::gather_piece() {
  mode_ = layout_.mode(degree_);
  const ExpertMode& m = mode_;
  const int64_t M = shape_.model_dim, El = m.local_experts, Hl = m.local_hidden;
  shape_ = ExpertShape{El, M, Hl, config_.activation};
  const int64_t H1l = shape_.h1();
  if (m.gather == 1) {
    cw1_ = w1_;
    cw2_ = w2_;
    cdw1_ = dw1_;
    cdw2_ = dw2_;
    return;
  }
  pw2_ = pw1_ + El * H1l * M;
  pdw2_ = pdw1_ + El * H1l * M;
  cw1_ = pw1_;
  cw2_ = pw2_;
  cdw1_ = pdw1_;
  cdw2_ = pdw2_;
  {
    Stopwatch sw(timing_, times_.gather_s);
    comm_->gather_units(m.degree, w1_, gathered_, block_);
  }
  if (whole_units()) {
    // Whole experts: each gathered block is already nu experts in the
    // compute layout; the experts run block by block, and their gradients
    // are written in the same block layout, ready for the reduce-scatter.
    std::fill(pdw1_, pdw1_ + int64_t(m.gather) * block_, T(0));
    return;
  }
  copy_piece(false, pw1_, pw2_);
  std::fill(pdw1_, pdw1_ + El * (H1l + Hl) * M, T(0));
}

// Between the gathered units (gathered_, (Gs, block)) and the piece's
// experts w1 (El, H1l, M), w2 (El, M, Hl): to_units packs, else assembles.
template <typename T>
void MoeLayer<T>::copy_piece(bool to_units, T* w1, T* w2) {
  const ExpertMode& m = mode_;
  const int64_t M = shape_.model_dim, Hl = m.local_hidden, H1l = shape_.h1();
  const bool swiglu = config_.activation == ActivationKind::SwiGLU;
  const int64_t nu = layout_.units_per_rank(), Hu = layout_.unit_hidden();
  const int64_t u1 = layout_.unit_w1_size(M), u2 = layout_.unit_w2_size(M), w2_at = w2_ - w1_;
  compute_pool().run(m.gather * nu, [&](int64_t u) {
    const int64_t q = u / nu, j = u % nu, le = u / m.units_per_expert, k = u % m.units_per_expert;
    T* block = gathered_ + q * block_;
    copy_unit(to_units, block + j * u1, block + w2_at + j * u2, w1 + le * H1l * M, w2 + le * M * Hl, k, Hu, Hl, M,
              swiglu);
  });
}

// Packs the piece's gradients back into units (the gathered layout) and
// reduce-scatters them to their owners: each rank receives the sum of its
// units' gradients over its gather group.
template <typename T>
void MoeLayer<T>::begin_reduce_piece() {
  const ExpertMode& m = mode_;
  if (m.gather == 1) return;
  if (whole_units()) {
    Stopwatch sw(timing_, times_.gather_s);
    comm_->begin_reduce_units(m.degree, pdw1_, reduced_, block_);
    reduce_pending_ = true;
    return;
  }
  copy_piece(true, pdw1_, pdw2_);
  Stopwatch sw(timing_, times_.gather_s);
  comm_->begin_reduce_units(m.degree, gathered_, reduced_, block_);
  reduce_pending_ = true;
}

template <typename T>
void MoeLayer<T>::end_reduce_piece() {
  if (!reduce_pending_) return;
  {
    Stopwatch sw(timing_, times_.gather_s);
    comm_->end_reduce_units();
  }
  reduce_pending_ = false;
  // The padding between the views is zero in the packed buffer, so the
  // whole block can be added.
  for (int64_t i = 0; i < block_; ++i) dw1_[i] += reduced_[i];
}

// Dispatch of mode P: counts first (each peer learns how many rows it gets
// per local expert), then the rows; received rows are peer-major and are
// reordered expert-major so each expert runs one GEMM over all its rows.
// A sliced expert's rows go to each of its dup owners (overlapping send
// ranges). The returned handle is what combine (and backward's dispatch of
// dy and combine of dx) consume.
template <typename T>
DispatchHandle& MoeLayer<T>::plan_exchange() {
  DispatchHandle& h = handle_;
  h.mode = mode_;
  h.chunks = 1;
  const ExpertMode& m = h.mode;
  const int P = m.degree;
  const int64_t El = m.local_experts;
  for (int p = 0; p < P; ++p) {
    const int64_t e0 = layout_.dest_first_expert(m, p);
    h.send_displs[p] = expert_offset_[e0];
    h.send_rows[p] = 0;
    for (int64_t j = 0; j < El; ++j) {
      h.send_counts[p * El + j] = expert_count_[e0 + j];
      h.send_rows[p] += expert_count_[e0 + j];
    }
    h.part_displs[p] = p == 0 ? 0 : h.part_displs[p - 1] + h.send_rows[p - 1];
  }
  {
    Stopwatch sw(timing_, times_.a2a_s);
    comm_->exchange_counts(P, h.send_counts.data(), h.ex_counts.data(), static_cast<int>(El));
  }
  for (int p = 0; p < P; ++p) {
    h.recv_rows[p] = 0;
    for (int64_t j = 0; j < El; ++j) h.recv_rows[p] += h.ex_counts[p * El + j];
    h.recv_displs[p] = p == 0 ? 0 : h.recv_displs[p - 1] + h.recv_rows[p - 1];
  }
  int64_t at = 0;
  for (int64_t j = 0; j < El; ++j) {
    h.ex_offset[j] = at;
    h.ex_count[j] = 0;
    for (int p = 0; p < P; ++p) h.ex_count[j] += h.ex_counts[p * El + j];
    at += h.ex_count[j];
  }
  SY_CHECK_AS(Error, at <= ex_rows_,
              "internal: " << at << " rows received for the local experts exceed the workspace " << ex_rows_);
  h.expert_rows = at;
  return h;
}

template <typename T>
const DispatchHandle& MoeLayer<T>::dispatch(const T* rows, T* expert_rows) {
  DispatchHandle& h = plan_exchange();
  redispatch(h, rows, expert_rows);
  return h;
}

// Rows [block * c / d, block * (c + 1) / d) of each peer block, on both
// sides; chunk c's rows of local expert j from peer p are the overlap of
// that range with j's rows in p's (expert-major) block.
template <typename T>
void MoeLayer<T>::plan_chunks(DispatchHandle& h, int d) {
  const int P = h.mode.degree;
  const int64_t El = h.mode.local_experts;
  h.chunks = d;
  int64_t base = 0;
  for (int c = 0; c < d; ++c) {
    for (int p = 0; p < P; ++p) {
      const int64_t s0 = h.send_rows[p] * c / d, s1 = h.send_rows[p] * (c + 1) / d;
      const int64_t r0 = h.recv_rows[p] * c / d, r1 = h.recv_rows[p] * (c + 1) / d;
      h.chunk_send_begin[c * P + p] = s0;
      h.chunk_send_rows[c * P + p] = s1 - s0;
      h.chunk_recv_begin[c * P + p] = r0;
      h.chunk_recv_rows[c * P + p] = r1 - r0;
    }
    for (int64_t j = 0; j < El; ++j) h.chunk_ex_count[c * El + j] = 0;
    for (int p = 0; p < P; ++p) {
      const int64_t a = h.chunk_recv_begin[c * P + p], b = a + h.chunk_recv_rows[c * P + p];
      int64_t cum = 0;
      for (int64_t j = 0; j < El; ++j) {
        const int64_t n = h.ex_counts[p * El + j];
        h.chunk_ex_count[c * El + j] += std::max<int64_t>(0, std::min(b, cum + n) - std::max(a, cum));
        cum += n;
      }
    }
    for (int64_t j = 0; j < El; ++j) {
      h.chunk_ex_offset[c * El + j] = base;
      base += h.chunk_ex_count[c * El + j];
    }
  }
}

// Chunk c's rows between the peer-major exchange buffer (stage) and the
// chunk-major expert side (expert).
template <typename T>
static void reorder_chunk(const DispatchHandle& h, int c, int64_t M, T* stage, T* expert, bool to_expert) {
  const int P = h.mode.degree;
  const int64_t El = h.mode.local_experts;
  // Rows of each local expert placed so far in this chunk: peers in order.
  int64_t fill[64];
  std::vector<int64_t> fill_big;
  int64_t* placed = fill;
  if (El > 64) {
    fill_big.assign(size_t(El), 0);
    placed = fill_big.data();
  } else {
    std::fill(fill, fill + El, int64_t(0));
  }
  for (int p = 0; p < P; ++p) {
    const int64_t a = h.chunk_recv_begin[c * P + p], b = a + h.chunk_recv_rows[c * P + p];
    int64_t cum = 0;
    for (int64_t j = 0; j < El; ++j) {
      const int64_t n = h.ex_counts[p * El + j];
      const int64_t lo = std::max(a, cum), hi = std::min(b, cum + n);
      cum += n;
      if (hi <= lo) continue;
      T* s = stage + (h.recv_displs[p] + lo) * M;
      T* e = expert + (h.chunk_ex_offset[c * El + j] + placed[j]) * M;
      const int64_t count = (hi - lo) * M;
      if (to_expert) std::copy(s, s + count, e);
      else std::copy(e, e + count, s);
      placed[j] += hi - lo;
    }
  }
}

// Copies rows between peer-major (stage) and expert-major (expert side) order.
template <typename T>
static void reorder_rows(const DispatchHandle& h, int64_t M, T* stage, T* expert, bool to_expert) {
  const int64_t El = h.mode.local_experts;
  compute_pool().run(h.mode.degree, [&](int64_t p) {
    int64_t src = h.recv_displs[p];
    for (int64_t j = 0; j < El; ++j) {
      int64_t dst = h.ex_offset[j];
      for (int q = 0; q < p; ++q) dst += h.ex_counts[q * El + j];
      const int64_t n = h.ex_counts[p * El + j];
      if (to_expert) std::copy(stage + src * M, stage + (src + n) * M, expert + dst * M);
      else std::copy(expert + dst * M, expert + (dst + n) * M, stage + src * M);
      src += n;
    }
  });
}

template <typename T>
void MoeLayer<T>::redispatch(const DispatchHandle& h, const T* rows, T* expert_rows) {
  const int64_t M = shape_.model_dim;
  {
    Stopwatch sw(timing_, times_.a2a_s);
    comm_->exchange_rows(h.mode.degree, {a2a_algo_, 0}, rows, h.send_rows.data(), h.send_displs.data(), stage_,
                         h.recv_rows.data(), h.recv_displs.data(), M);
  }
  reorder_rows(h, M, stage_, expert_rows, true);
}

// Rows back from the expert side into `rows` (dispatch order), or, for
// sliced experts, the dup partial results summed into it.
template <typename T>
void MoeLayer<T>::combine(const DispatchHandle& h, T* expert_rows, T* rows) {
  const ExpertMode& m = h.mode;
  const int64_t M = shape_.model_dim;
  reorder_rows(h, M, stage_, expert_rows, false);
  T* recv = m.dup > 1 ? part_ : rows;
  const std::vector<int64_t>& displs = m.dup > 1 ? h.part_displs : h.send_displs;
  {
    Stopwatch sw(timing_, times_.a2a_s);
    comm_->exchange_rows(m.degree, {a2a_algo_, 0}, stage_, h.recv_rows.data(), h.recv_displs.data(), recv,
                         h.send_rows.data(), displs.data(), M);
  }
  if (m.dup > 1) sum_partials(h, rows);
}

// rows (dispatch order) = the sum of the dup owners' partial results of
// each sliced expert (part_, per owner).
template <typename T>
void MoeLayer<T>::sum_partials(const DispatchHandle& h, T* rows) {
  const ExpertMode& m = h.mode;
  const int64_t M = shape_.model_dim;
  compute_pool().parallel_for(num_experts_, 1, [&](int64_t e0, int64_t e1) {
    for (int64_t e = e0; e < e1; ++e) {
      T* dst = rows + expert_offset_[e] * M;
      const int64_t n = expert_count_[e] * M;
      const T* first = part_ + h.part_displs[e * m.dup] * M;
      std::copy(first, first + n, dst);
      for (int d = 1; d < m.dup; ++d) {
        const T* src = part_ + h.part_displs[e * m.dup + d] * M;
        for (int64_t i = 0; i < n; ++i) dst[i] += src[i];
      }
    }
  });
}

// The pipelined expert stage. Per chunk c: wait for its rows, start chunk
// c + 1's exchange, run the experts on chunk c, start chunk c's return.
// Every rank starts the exchanges in the same order (dispatch 0, then
// dispatch c + 1 before return c), as MPI needs. Forward plans the exchange
// and its chunks (rows = xd_, out = y_); backward reuses the forward's plan,
// sends dy into the same expert-side rows the inputs had (ex_y_ then holds
// dy) and returns dx (rows = dy_, out = dxd_).
template <typename T>
void MoeLayer<T>::run_pipeline(bool backward, const T* rows, T* out) {
  if (!backward) plan_chunks(plan_exchange(), pipeline_degree_);
  const DispatchHandle& h = handle_;
  const int d = h.chunks, P = h.mode.degree;
  const int64_t M = shape_.model_dim, El = h.mode.local_experts;
  T* back = h.mode.dup > 1 ? part_ : out;
  const std::vector<int64_t>& back_displs = h.mode.dup > 1 ? h.part_displs : h.send_displs;
  // Chunk c's peer-block ranges as counts and displacements (P each).
  auto exchange = [&](int c, bool to_experts, const T* src, T* dst) {
    int64_t* s_rows = scratch_counts_.data();
    int64_t* s_displs = s_rows + P;
    int64_t* r_rows = s_displs + P;
    int64_t* r_displs = r_rows + P;
    for (int p = 0; p < P; ++p) {
      const int64_t sb = h.chunk_send_begin[c * P + p], sn = h.chunk_send_rows[c * P + p];
      const int64_t rb = h.chunk_recv_begin[c * P + p], rn = h.chunk_recv_rows[c * P + p];
      if (to_experts) {
        s_rows[p] = sn, s_displs[p] = h.send_displs[p] + sb, r_rows[p] = rn, r_displs[p] = h.recv_displs[p] + rb;
      } else {
        s_rows[p] = rn, s_displs[p] = h.recv_displs[p] + rb, r_rows[p] = sn, r_displs[p] = back_displs[p] + sb;
      }
    }
    Stopwatch sw(timing_, times_.a2a_s);
    const ExchangeRoute route{a2a_algo_, static_cast<int>(pending_.size())};
    pending_.push_back(comm_->begin_exchange_rows(P, route, src, s_rows, s_displs, dst, r_rows, r_displs, M));
  };
  auto wait = [&](size_t i) {
    Stopwatch sw(timing_, times_.a2a_s);
    pending_[i]->wait();
  };
  T* incoming = backward ? ex_y_ : ex_x_;  // expert side: inputs, or dy
  T* results = backward ? ex_dx_ : ex_y_;  // expert side: outputs, or dx
  pending_.clear();
  exchange(0, true, rows, stage_);
  size_t dispatch_at = 0;  // pending_ index of the next chunk's dispatch
  for (int c = 0; c < d; ++c) {
    wait(dispatch_at);
    if (c + 1 < d) {
      exchange(c + 1, true, rows, stage_);
      dispatch_at = pending_.size() - 1;
    }
    reorder_chunk(h, c, M, stage_, incoming, true);
    // The chunk's experts in row blocks, with the exchanges in flight polled
    // between blocks: MPI moves a non-blocking exchange only inside MPI
    // calls, so without polls a transfer would wait for the next chunk
    // boundary. Rows are independent, and weight gradients accumulate, so
    // the blocks compute exactly what one call would.
    for (int b = 0; b < kPollBlocks; ++b) {
      int64_t* offset = block_offset_.data();
      int64_t* count = block_count_.data();
      for (int64_t j = 0; j < El; ++j) {
        const int64_t n = h.chunk_ex_count[c * El + j], lo = n * b / kPollBlocks, hi = n * (b + 1) / kPollBlocks;
        offset[j] = h.chunk_ex_offset[c * El + j] + lo;
        count[j] = hi - lo;
      }
      if (backward) run_experts_backward(offset, count, ex_x_, ex_y_, ex_dx_);
      else run_experts_forward(offset, count, ex_x_, ex_y_);
      for (auto& r : pending_) r->test();
    }
    reorder_chunk(h, c, M, ret_, results, false);
    exchange(c, false, ret_, back);
  }
  // The weight gradients travel to their owners while the last results return.
  if (backward) begin_reduce_piece();
  for (size_t i = 0; i < pending_.size(); ++i) wait(i);
  pending_.clear();
  if (h.mode.dup > 1) sum_partials(h, out);
}

template <typename T>
bool MoeLayer<T>::whole_units() const {
  return mode_.gather > 1 && layout_.slices() == 1;
}

// The piece's experts over rows grouped by local expert (offset, count: El).
template <typename T>
void MoeLayer<T>::run_experts_forward(const int64_t* offset, const int64_t* count, const T* x, T* y) {
  if (!whole_units()) {
    experts_forward(shape_, offset, count, x, cw1_, cw2_, h1_, act_, y);
    return;
  }
  const int64_t nu = layout_.units_per_rank(), w2_at = w2_ - w1_;
  const ExpertShape block{nu, shape_.model_dim, shape_.hidden, shape_.activation};
  for (int q = 0; q < mode_.gather; ++q) {
    const T* w = gathered_ + q * block_;
    experts_forward(block, offset + q * nu, count + q * nu, x, w, w + w2_at, h1_, act_, y);
  }
}

template <typename T>
void MoeLayer<T>::run_experts_backward(const int64_t* offset, const int64_t* count, const T* x, const T* dy, T* dx) {
  if (!whole_units()) {
    experts_backward(shape_, offset, count, x, cw1_, cw2_, h1_, act_, dy, dact_, dh1_, dx, cdw1_, cdw2_);
    return;
  }
  const int64_t nu = layout_.units_per_rank(), w2_at = w2_ - w1_;
  const ExpertShape block{nu, shape_.model_dim, shape_.hidden, shape_.activation};
  for (int q = 0; q < mode_.gather; ++q) {
    const T* w = gathered_ + q * block_;
    T* dw = pdw1_ + q * block_;
    experts_backward(block, offset + q * nu, count + q * nu, x, w, w + w2_at, h1_, act_, dy, dact_, dh1_, dx, dw,
                     dw + w2_at);
  }
}

template <typename T>
void MoeLayer<T>::experts_stage_forward() {
  gather_piece();
  const ExpertMode& m = mode_;
  if (m.degree == 1) {
    run_experts_forward(expert_offset_.data(), expert_count_.data(), xd_, y_);
    stats_.expert_flops_forward =
        experts_forward_flops(shape_, std::accumulate(expert_count_.begin(), expert_count_.end(), int64_t(0)));
    return;
  }
  if (pipeline_degree_ > 1) {
    run_pipeline(false, xd_, y_);
    stats_.expert_flops_forward = experts_forward_flops(shape_, handle_.expert_rows);
    return;
  }
  const DispatchHandle& h = dispatch(xd_, ex_x_);
  run_experts_forward(h.ex_offset.data(), h.ex_count.data(), ex_x_, ex_y_);
  stats_.expert_flops_forward = experts_forward_flops(shape_, h.expert_rows);
  combine(h, ex_y_, y_);
}

template <typename T>
void MoeLayer<T>::experts_stage_backward() {
  const ExpertMode& m = mode_;
  if (m.degree == 1) {
    run_experts_backward(expert_offset_.data(), expert_count_.data(), xd_, dy_, dxd_);
    begin_reduce_piece();
    return;
  }
  if (handle_.chunks > 1) {
    run_pipeline(true, dy_, dxd_);
    return;
  }
  const DispatchHandle& h = handle_;  // the forward's plan
  redispatch(h, dy_, ex_y_);          // ex_y_ now holds dy
  run_experts_backward(h.ex_offset.data(), h.ex_count.data(), ex_x_, ex_y_, ex_dx_);
  // The weight gradients travel to their owners while the inputs' gradients return.
  begin_reduce_piece();
  combine(h, ex_dx_, dxd_);
}

// Uniform(1 - eps, 1 + eps) for element i of this call's router input, from
// (seed, noise stream, element): reproducible, thread-safe, and recomputable in backward.
template <typename T>
T MoeLayer<T>::jitter_noise(int64_t i) const {
  const double u = uniform01(jitter_seed_ + uint64_t(i));
  return static_cast<T>(1.0 + config_.jitter * (2.0 * u - 1.0));
}

template <typename T>
ExpertShape MoeLayer<T>::shared_shape() const {
  // The full hidden width: shape_ is the mode's piece, which may be a slice.
  return ExpertShape{1, shape_.model_dim, config_.num_shared_experts * int64_t(config_.hidden_size),
                     shape_.activation};
}

template <typename T>
void MoeLayer<T>::on_optimizer_step() {
  // Every rank calls this, so the counts are summed over ranks before the bias moves.
  if (config_.router == RouterKind::SigmoidBias) router_->update_bias(balancer_->reduced_step_counts().data());
  balancer_->reset();
}

template class MoeLayer<float>;
template class MoeLayer<double>;

}  // namespace sy::moe
