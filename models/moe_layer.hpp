// One MoE layer: router -> capacity -> dispatch -> experts -> combine, on one
// rank or over W ranks that share the experts (ExpertComm), each storing 1/W
// of them in the layout of models/expert_layout.hpp, in any parallel mode.
//
// Forward  out(T, M) = sum over the kept slots s of token t of weight_s * expert_{e_s}(x_t)
//                      + shared_experts(x_t)
// The residual is the caller's: a token whose slots were all dropped (or that
// chose only null experts) gets out = shared part only and passes through the
// residual path. Dispatch and combine move rows by slot lists (O(T k M)),
// never a dense one-hot product.
// Backward: dx (T, M) overwritten; every parameter gradient +=. The router
// receives gradients through the combine weights and through the balancing,
// z and router-specific losses, whose gradients are formed in forward (their
// loss weight is 1: they are added to the training loss as they are).
//
// Parameters live in one flat buffer with named views (params(), grads()):
//   router_weight (L, M)           L = router->num_logits() (absent for hash)
//   expert_w1     (n_u, H1u, M)    this rank's units; one rank: (E, H1, M), H1 = H or 2H (SwiGLU)
//   expert_w2     (n_u, M, Hu)     one rank: (E, M, H)
//   shared_w1     (S*H1, M)        S = moe.num_shared_experts (absent when 0)
//   shared_w2     (M, S*H)
// The router and shared experts are replicated on the W ranks (their
// gradients are summed by the caller, parallel/moe_hooks.hpp); the expert
// units are stored once, and backward reduce-scatters their gradients back
// to the owners: after backward, grad("expert_w1") is the full gradient of
// this rank's units (+= across calls).
// Activations and scratch are one workspace sized at construction for
// max_tokens and every mode the layer may run: a forward/backward pair
// allocates nothing.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "core/config.hpp"
#include "models/balance.hpp"
#include "models/expert_layout.hpp"
#include "models/experts.hpp"
#include "models/router.hpp"
#include "parallel/communicator.hpp"
#include "parallel/tuner.hpp"

namespace sy::moe {

struct MoeLayerStats {
  std::vector<int64_t> routed_per_expert;  // (E) real slots chosen, before capacity
  std::vector<int64_t> tokens_per_expert;  // (E) real slots kept and computed
  int64_t num_tokens = 0;
  int64_t capacity = 0;        // tokens per expert this call
  int64_t routed_slots = 0;    // real slots chosen
  int64_t dropped_slots = 0;   // real slots over capacity (passed through the residual)
  int64_t null_slots = 0;      // slots on null experts
  double experts_per_token = 0;  // mean real experts computed per token
  double balance_loss = 0, z_loss = 0, router_loss = 0;  // coefficients applied
  double expert_flops_forward = 0;  // executed expert GEMM flops (backward does twice this)
  double dropped_fraction() const { return routed_slots ? double(dropped_slots) / double(routed_slots) : 0.0; }
  double load_max_over_mean() const;
};

// Wall time spent inside the layer, when timing is on (benchmarks); experts_s
// includes the token all-to-all (a2a_s) and the expert weights' all-gather
// and gradient reduce-scatter (gather_s).
struct MoeLayerTimes {
  double router_s = 0, dispatch_s = 0, experts_s = 0, combine_s = 0, a2a_s = 0, gather_s = 0;
  void clear() { *this = MoeLayerTimes{}; }
};

// Reduces n values over the expert-parallel group by MAX, in place (the
// largest per-expert load, and the token count); identity on one rank.
using CapacityReduceHook = std::function<void(int64_t* values, int n)>;

// How one row exchange travels: the all-to-all algorithm (parallel.a2a_algo;
// never auto here), and which of the exchanges in flight at once it is (each
// slot has its own algorithm state and message tags).
struct ExchangeRoute {
  AllToAllAlgo algo = AllToAllAlgo::Linear;
  int slot = 0;
};

// The collectives of the expert layout (models/expert_layout.hpp) over the
// W ranks that share the experts; parallel/moe_hooks.hpp implements it over a
// Communicator. Every call names the mode's degree P, which selects the group.
template <typename T>
class ExpertComm {
 public:
  virtual ~ExpertComm() = default;
  virtual int size() const = 0;  // W
  virtual int rank() const = 0;  // g
  // Exchange group of degree P. Sends n counts to every peer (send: (P, n),
  // peer-major) and receives n from each (recv: (P, n)).
  virtual void exchange_counts(int P, const int64_t* send, int64_t* recv, int n) = 0;
  // All-to-all of rows of `width` elements; row counts and displacements, P
  // each. Send ranges may overlap (one expert's rows sent to its dup owners).
  // Non-blocking: the buffers must stay untouched until the returned request
  // completes (the counts may change at once). Several may be in flight, each
  // in its own route.slot (0, 1, ...); every rank starts them in the same order.
  virtual par::RequestPtr begin_exchange_rows(int P, ExchangeRoute route, const T* send, const int64_t* send_rows,
                                              const int64_t* send_displs, T* recv, const int64_t* recv_rows,
                                              const int64_t* recv_displs, int64_t width) = 0;
  void exchange_rows(int P, ExchangeRoute route, const T* send, const int64_t* send_rows, const int64_t* send_displs,
                     T* recv, const int64_t* recv_rows, const int64_t* recv_displs, int64_t width) {
    begin_exchange_rows(P, route, send, send_rows, send_displs, recv, recv_rows, recv_displs, width)->wait();
  }
  // Whether the exchange group of degree P can run algorithm `algo` (2dh
  // needs whole nodes, flowsplit whole leaves); linear always can.
  virtual bool supports(int /*P*/, AllToAllAlgo algo) const { return algo == AllToAllAlgo::Linear; }
  // Whether `algo` at P is a different exchange from linear (worth a trial).
  virtual bool distinct(int P, AllToAllAlgo algo) const { return supports(P, algo); }
  // Builds the state of `slots` exchanges of `algo` at P now (collective:
  // every rank calls it alike), so that no trial pays for it.
  virtual void prepare(int /*P*/, AllToAllAlgo /*algo*/, int /*slots*/) {}
  // Gather group of degree P: all (W/P, n) = every member's n elements, in rank order.
  virtual void gather_units(int P, const T* mine, T* all, int64_t n) = 0;
  // Gather group of degree P: mine (n) = sum over members of their block
  // g % (W/P) of all (W/P, n). Non-blocking until end_reduce_units().
  virtual void begin_reduce_units(int P, const T* all, T* mine, int64_t n) = 0;
  virtual void end_reduce_units() = 0;
};

// The plan of one token exchange, returned by dispatch and consumed by
// combine; backward dispatches dy and combines dx with the forward's plan.
// Sized once at construction (no allocation per call).
struct DispatchHandle {
  ExpertMode mode;
  std::vector<int64_t> send_counts, ex_counts;  // (P, El) rows to / from peer p for local expert j
  std::vector<int64_t> ex_offset, ex_count;     // (El) expert-major layout of the expert side
  std::vector<int64_t> send_rows, send_displs;  // (P) rows to each peer, from the dispatch buffer
  std::vector<int64_t> recv_rows, recv_displs;  // (P) rows from each peer, peer-major
  std::vector<int64_t> part_displs;             // (P) partial results of sliced experts, per owner
  int64_t expert_rows = 0;                      // rows on the expert side
  // Pipelining over d chunks (moe.pipeline_degree): chunk c of peer p's
  // block is rows [begin, begin + rows) of it, begin = block * c / d, on
  // both sides of the exchange; the expert side holds the chunks one after
  // the other, each expert-major.
  int chunks = 1;                               // d
  std::vector<int64_t> chunk_send_begin, chunk_send_rows;  // (d, P) within the send block to peer p
  std::vector<int64_t> chunk_recv_begin, chunk_recv_rows;  // (d, P) within the block received from peer p
  std::vector<int64_t> chunk_ex_offset, chunk_ex_count;    // (d, El) expert side, chunk-major
};

template <typename T>
class MoeLayer {
 public:
  // With an ExpertComm of W ranks, this rank stores 1/W of the experts. The
  // mode is moe.parallel_mode when fixed; under auto (until the tuner picks)
  // the degree is set by set_expert_degree (connect_moe_layer: parallel.ep),
  // else r = 1. The parameters of every rank together equal those of a
  // one-rank layer with the same seed, and every mode computes the same
  // outputs and gradients.
  MoeLayer(const MoeConfig& config, int64_t model_dim, int64_t max_tokens, int64_t seq_len, uint64_t seed,
           ExpertComm<T>* comm = nullptr);
  ~MoeLayer();

  // x (T, M); token_ids (T), needed by the hash router, may be null otherwise;
  // out (T, M) overwritten. Returns the layer's auxiliary loss (balance + z +
  // router-specific), already weighted by its coefficients.
  double forward(const T* x, const int32_t* token_ids, int64_t num_tokens, T* out);
  // dout (T, M) -> dx (T, M) overwritten; parameter gradients +=. Needs the
  // x given to the last forward to be unchanged.
  void backward(const T* dout, T* dx);
  // The optimizer step's hook: bias update (sigmoid_bias), new global batch.
  void on_optimizer_step();

  T* params() { return params_.data(); }
  T* grads() { return grads_.data(); }
  int64_t num_params() const { return static_cast<int64_t>(params_.size()); }
  void zero_grads();
  // A named parameter view (see the header comment); nullptr when absent.
  T* param(const std::string& name);
  T* grad(const std::string& name);
  int64_t param_size(const std::string& name) const;

  const MoeLayerStats& stats() const { return stats_; }
  const RouterOutput<T>& routing() const { return routing_; }
  // Row of the dispatched buffer each slot went to; -1 for dropped and null slots.
  const std::vector<int64_t>& slot_row() const { return slot_row_; }
  Router<T>& router() { return *router_; }
  Balancer<T>& balancer() { return *balancer_; }
  // The experts this rank computes in the current mode (all E on one rank);
  // sliced experts have hidden = the piece's slice width.
  const ExpertShape& expert_shape() const { return shape_; }
  int64_t first_local_expert() const { return mode_.first_expert; }
  const ExpertLayout& layout() const { return layout_; }

  // The mode of the next forwards: DESIGN.md's r (0, or a divisor of S), or
  // the exchange degree P directly. Switching moves no stored parameter;
  // throws ConfigError for a mode this layer is not valid or not sized for.
  void set_parallel_mode(int r) { set_expert_degree(comm_ ? layout_.degree_for_mode(r) : 1); }
  void set_expert_degree(int P);
  int expert_degree() const { return degree_; }
  // Chunks d in {1, 2, 4, 8} of the token exchange (moe.pipeline_degree):
  // chunk c's exchange overlaps the experts of chunk c - 1 and the return of
  // chunk c - 2; outputs and gradients equal d = 1 up to summation order.
  // ConfigError for another d, or d > 1 on a layer built with
  // moe.pipeline_degree = 1 (no return staging buffer).
  void set_pipeline_degree(int d);
  int pipeline_degree() const { return pipeline_degree_; }
  // The all-to-all algorithm of the token exchange (parallel.a2a_algo; auto
  // = linear until the tuner picks). ConfigError when the ExpertComm cannot
  // run it for the current degree.
  void set_alltoall(AllToAllAlgo algo);
  AllToAllAlgo alltoall() const { return a2a_algo_; }
  // Hands the choices in `dims` of (P, d, algorithm) to the run-time tuner
  // (parallel/tuner.hpp), as MoE layer `layer_id` of its model; the others
  // stay as set (d only where the layer was built with moe.pipeline_degree =
  // auto). Every training forward then times a trial until its key is
  // decided. No-op on one rank, or with nothing to choose. Collective over
  // the layer's ranks: it builds every exchange a trial may run.
  void set_tuner(par::Tuner* tuner, int layer_id, par::TuneDims dims);
  const par::TuningSpace& tuning_space() const { return tuning_space_; }
  bool tuned() const { return tuner_ != nullptr; }
  // The degrees the workspace was sized for (all valid ones under auto).
  const std::vector<int>& sized_degrees() const { return sized_degrees_; }

  void set_count_reduce_hook(CountReduceHook hook) { balancer_->set_count_reduce_hook(std::move(hook)); }
  void set_capacity_reduce_hook(CapacityReduceHook hook) { capacity_reduce_ = std::move(hook); }
  void set_timing(bool on) { timing_ = on; }
  // Selects the router-jitter noise of the next forwards. The trainer sets it
  // from (step, micro-batch) so runs are reproducible and resumable; the same
  // stream gives the same noise.
  void set_noise_stream(uint64_t stream) { noise_stream_ = stream; }
  // Training adds the router jitter (moe.jitter); evaluation and generation
  // route the inputs as they are.
  void set_training(bool on) { training_ = on; }
  MoeLayerTimes& times() { return times_; }

  // Capacity (tokens per expert) for num_tokens tokens and the largest routed
  // load, by moe.capacity_factor (DESIGN.md section 7).
  int64_t capacity_for(int64_t num_tokens, int64_t max_load) const;

 private:
  struct View {
    std::string name;
    int64_t offset, size;
  };
  void add_param(const std::string& name, int64_t size);
  void init_params(uint64_t seed);
  void apply_capacity(int64_t num_tokens);
  // The expert stage: local dispatch rows (xd_ / dy_) to local result rows
  // (y_ / dxd_), across the exchange when there is one.
  void experts_stage_forward();
  void experts_stage_backward();
  // Token exchange of the current mode: rows (dispatch order) -> expert_rows
  // (expert-major on the owners); redispatch reuses a plan (backward's dy);
  // combine brings expert-side rows back (summing sliced experts' partials).
  const DispatchHandle& dispatch(const T* rows, T* expert_rows);
  void redispatch(const DispatchHandle& handle, const T* rows, T* expert_rows);
  void combine(const DispatchHandle& handle, T* expert_rows, T* rows);
  // The exchange plan without moving rows (counts exchanged), and its chunks.
  DispatchHandle& plan_exchange();
  void plan_chunks(DispatchHandle& h, int d);
  // The pipelined expert stage (d > 1): rows (dispatch order) -> expert side
  // chunk by chunk -> expert compute -> results back into out (dispatch
  // order; partial results of sliced experts summed). Forward, or backward
  // with the forward's plan.
  void run_pipeline(bool backward, const T* rows, T* out);
  void sum_partials(const DispatchHandle& h, T* rows);
  // Gathers the mode's piece into the compute weights (cw1_, cw2_), or
  // points them at the stored units when the piece is this rank's own.
  void gather_piece();
  void copy_piece(bool to_units, T* w1, T* w2);
  // Packs the compute gradients into units and starts their reduce-scatter.
  void begin_reduce_piece();
  // Whole experts gathered (S = 1, Gs > 1): they run straight from the
  // gathered blocks, no assembly; run_experts_* pick the path.
  bool whole_units() const;
  void run_experts_forward(const int64_t* offset, const int64_t* count, const T* x, T* y);
  void run_experts_backward(const int64_t* offset, const int64_t* count, const T* x, const T* dy, T* dx);
  void end_reduce_piece();

  T jitter_noise(int64_t i) const;
  // The shared experts as one expert of hidden S*H.
  ExpertShape shared_shape() const;

  MoeConfig config_;
  int64_t num_experts_;  // E, over all ranks
  ExpertShape shape_;    // the experts this rank computes in mode_
  ExpertComm<T>* comm_ = nullptr;
  ExpertLayout layout_;
  int degree_ = 1;       // P of the next forward
  ExpertMode mode_;      // of the last forward (backward uses it)
  std::vector<int> sized_degrees_;
  bool reduce_pending_ = false;
  int64_t max_tokens_, max_rows_;
  int num_logits_;
  std::unique_ptr<Router<T>> router_;
  std::unique_ptr<Balancer<T>> balancer_;
  CapacityReduceHook capacity_reduce_;

  std::vector<T> params_, grads_;
  std::vector<View> views_;
  T *router_w_ = nullptr, *w1_ = nullptr, *w2_ = nullptr, *shared_w1_ = nullptr, *shared_w2_ = nullptr;
  T *router_dw_ = nullptr, *dw1_ = nullptr, *dw2_ = nullptr, *shared_dw1_ = nullptr, *shared_dw2_ = nullptr;

  // Workspace: one allocation; views set in the constructor (sizes for max_tokens).
  std::vector<T> work_;
  T* router_in_;    // (T, M)   x with jitter / bf16 rounding applied (the router's input)
  T* router_wq_;    // (L, M)   router weight as used (bf16-rounded when router_dtype = bf16)
  T* logits_;       // (T, L)
  T* dprobs_aux_;   // (T, L)   balance and router-loss gradients, formed in forward
  T* dlogits_aux_;  // (T, L)   z-loss gradient, formed in forward
  T* dprobs_;       // (T, L)
  T* dlogits_;      // (T, L)
  T* xd_;           // (rows, M)  dispatched tokens
  T* h1_;           // (rows, H1)
  T* act_;          // (rows, H)
  T* y_;            // (rows, M)
  T* dy_;           // (rows, M)
  T* dact_;         // (rows, H)
  T* dh1_;          // (rows, H1)
  T* dxd_;          // (rows, M)
  T* shared_h1_;    // (T, S*H1)
  T* shared_act_;   // (T, S*H)
  T* shared_dact_;  // (T, S*H)
  T* shared_dh1_;   // (T, S*H1)
  T* router_dx_;    // (T, M)
  // Expert side (expert-major rows received from every rank); unused when
  // the mode's degree is 1.
  T* ex_x_;         // (ex_rows, M)
  T* ex_y_;         // (ex_rows, M)   forward output, then the incoming dy in backward
  T* ex_dx_;        // (ex_rows, M)
  T* stage_;        // (ex_rows, M)   rows in peer-major order, as the exchange moves them
  T* part_;         // (dup * rows, M) partial outputs of sliced experts, per owner
  T* ret_;          // (ex_rows, M)   pipelining: results on their way back, peer-major (absent when d = 1)
  // Expert weights of the mode's piece: gathered units (Gs, block), then
  // assembled per local expert; aliases of the stored units when Gs = 1.
  T* gathered_;     // (Gs, block)  block = this rank's [w1 units | w2 units]; also packs gradients
  T* pw1_;          // (El, H1l, M) the piece's experts, assembled from the gathered units
  T* pw2_ = nullptr;   // (El, M, Hl)  placed per mode in gather_piece, after El H1l M elements
  T* pdw1_;         // (El, H1l, M) the piece's gradients, reduce-scattered into dw1_/dw2_;
                    // (Gs, block) in the gathered layout for whole experts
  T* pdw2_ = nullptr;  // (El, M, Hl)
  T* reduced_;      // (block)      this rank's summed unit gradients
  // The weights and gradients the experts use: pw*_ / pdw*_, or the stored
  // units themselves when the piece is this rank's own (Gs = 1).
  T *cw1_ = nullptr, *cw2_ = nullptr, *cdw1_ = nullptr, *cdw2_ = nullptr;
  int64_t block_ = 0;    // elements of [w1 units | w2 units] (with the padding between)
  int64_t ex_rows_ = 0;  // expert-side rows the workspace holds
  DispatchHandle handle_;  // the last forward's exchange plan
  int pipeline_degree_ = 1;
  AllToAllAlgo a2a_algo_ = AllToAllAlgo::Linear;
  par::Tuner* tuner_ = nullptr;
  int tuner_layer_ = 0;
  par::TuningSpace tuning_space_;
  double trial_forward_s_ = 0;  // the open trial's forward time
  int64_t tuning_capacity_ = 0;  // the capacity of the largest rank's batch: the tuner's key, the same on every rank
  std::vector<par::RequestPtr> pending_;  // pipelining: exchanges in flight
  static constexpr int kPollBlocks = 4;   // pipelining: row blocks of a chunk's experts, polls between
  std::vector<int64_t> block_offset_, block_count_;  // (El) one row block's rows per local expert
  std::vector<int64_t> scratch_counts_;   // (4 P) one chunk exchange's counts and displacements
  std::vector<T> dweight_;             // (max slots)
  std::vector<int64_t> slot_row_;      // (max slots)
  std::vector<int64_t> expert_offset_, expert_count_;  // (E)
  std::vector<int64_t> bucket_;        // (max slots) slot ids grouped by expert
  std::vector<int64_t> bucket_begin_;  // (E + 1)

  RouterOutput<T> routing_;
  MoeLayerStats stats_;
  MoeLayerTimes times_;
  bool timing_ = false;
  const T* x_ = nullptr;             // the last forward's input
  const T* router_input_ = nullptr;  // router_in_, or x_ when no jitter or bf16 rounding applies
  int64_t num_tokens_ = 0;
  uint64_t seed_;
  uint64_t noise_stream_ = 0;
  bool training_ = true;
  uint64_t jitter_seed_ = 0;  // noise of the last forward
};

}  // namespace sy::moe
