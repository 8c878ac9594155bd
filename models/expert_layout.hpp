// Where the expert parameters live and how a parallel mode regroups them
// (DESIGN.md section 3, after Tutel): one stored layout for every mode, so a
// mode switch moves no stored parameter.
//
// W ranks share the experts (the token group: every rank with different
// tokens). The experts are cut into max(E, W) equal units:
//   E >= W: a unit is a whole expert; rank g stores units [g E/W, (g + 1) E/W)
//   E <  W: each expert's hidden dimension is cut into S = W/E slices of
//           H/S; rank g stores slice g % S of expert g / S.
// A unit is w1 (H1u, M) and w2 (M, Hu) with Hu = H/S and H1u = Hu (2 Hu for
// SwiGLU: [gate slice | up slice]); a rank stores [w1 units | w2 units].
//
// A mode is the degree P of the token exchange (P divides W; P divides E or
// E divides P). With Gs = W/P:
//   gather group   the Gs ranks with the same g / Gs (consecutive ranks)
//                  all-gather their units: piece p = g / Gs of the experts;
//   exchange group the P ranks with the same g % Gs, ordered by g / Gs,
//                  exchange tokens; together they hold every piece once.
// Piece p is E/P whole experts (P <= E) or a 1/(P/E) hidden slice of expert
// p / (P/E) (P > E): a token for expert e goes to dup = max(1, P/E) ranks
// and their partial outputs are summed.
// DESIGN.md's r maps to P = 1 (r = 0) and P = r min(E, W) (r >= 1): r = 0 data
// parallel (ZeRO-3 style gather of everything), r = 1 expert + data parallel,
// r = S expert + tensor parallel (no weight movement). Degrees between (for
// example P = 2 with E = W = 4, parallel.ep = 2) are expert parallelism over P
// ranks with the experts gathered over the W/P data-parallel replicas.
#pragma once

#include <algorithm>
#include <cstdint>
#include <sstream>
#include <string>
#include <vector>

#include "core/error.hpp"

namespace sy::moe {

struct ExpertMode {
  int degree = 1;               // P: ranks in the token exchange
  int gather = 1;               // Gs = W/P: ranks whose units form one piece
  int piece = 0;                // p = g / Gs: this rank's position in its exchange group
  int64_t local_experts = 0;    // experts (whole or sliced) in a piece
  int64_t local_hidden = 0;     // their hidden width in the piece
  int64_t units_per_expert = 1; // units making one local expert
  int64_t first_expert = 0;     // first expert of this rank's piece
  int64_t first_slice = 0;      // first unit slice of that expert in the piece
  int dup = 1;                  // ranks a token for one expert goes to
};

class ExpertLayout {
 public:
  ExpertLayout() = default;
  // Throws ConfigError when the experts cannot be split over W ranks.
  ExpertLayout(int64_t num_experts, int64_t hidden, bool swiglu, int world, int rank)
      : E_(num_experts), H_(hidden), swiglu_(swiglu), W_(world), g_(rank) {
    SY_CHECK_AS(ConfigError, E_ % W_ == 0 || W_ % E_ == 0,
                "moe.num_experts = " << E_ << " and the " << W_
                                     << " ranks holding different tokens (parallel.dp x parallel.ep) must divide "
                                        "one another: each rank stores 1/"
                                     << W_ << " of the experts");
    S_ = E_ >= W_ ? 1 : W_ / E_;
    SY_CHECK_AS(ConfigError, H_ % S_ == 0,
                "moe.hidden_size = " << H_ << " cannot be cut into " << S_ << " slices (" << W_ << " ranks, "
                                     << E_ << " experts): it must be divisible by " << S_);
  }

  int world() const { return W_; }
  int rank() const { return g_; }
  int64_t num_experts() const { return E_; }
  int64_t slices() const { return S_; }                              // S
  int64_t units_per_rank() const { return E_ >= W_ ? E_ / W_ : 1; }  // n_u
  int64_t unit_hidden() const { return H_ / S_; }                    // Hu
  int64_t unit_h1() const { return swiglu_ ? 2 * unit_hidden() : unit_hidden(); }
  int64_t unit_w1_size(int64_t M) const { return unit_h1() * M; }
  int64_t unit_w2_size(int64_t M) const { return M * unit_hidden(); }
  // Expert and slice of global unit u.
  int64_t unit_expert(int64_t u) const { return u / S_; }
  int64_t unit_slice(int64_t u) const { return u % S_; }
  int64_t first_unit() const { return int64_t(g_) * units_per_rank(); }

  bool valid_degree(int P) const {
    return P >= 1 && W_ % P == 0 && (E_ % P == 0 || P % E_ == 0);
  }
  std::vector<int> valid_degrees() const {
    std::vector<int> out;
    for (int P = 1; P <= W_; ++P)
      if (valid_degree(P)) out.push_back(P);
    return out;
  }
  // DESIGN.md's r: 0, and the divisors of S.
  std::vector<int> valid_modes() const {
    std::vector<int> out{0};
    for (int r = 1; r <= S_; ++r)
      if (S_ % r == 0) out.push_back(r);
    return out;
  }
  int degree_for_mode(int r) const {
    bool ok = r == 0 || (r >= 1 && S_ % r == 0);
    if (!ok) {
      std::ostringstream valid;
      for (int v : valid_modes()) valid << (valid.tellp() > 0 ? ", " : "") << v;
      SY_CHECK_AS(ConfigError, false,
                  "moe.parallel_mode = " << r << " is not valid for " << E_ << " experts on " << W_
                                         << " ranks (S = " << S_ << " slices per expert); valid: " << valid.str());
    }
    return r == 0 ? 1 : r * static_cast<int>(std::min<int64_t>(E_, W_));
  }

  ExpertMode mode(int P) const {
    SY_CHECK_AS(ConfigError, valid_degree(P),
                "expert-parallel degree " << P << " is not valid for " << E_ << " experts on " << W_
                                          << " ranks (it must divide " << W_ << " and divide or be a multiple of "
                                          << E_ << ")");
    ExpertMode m;
    m.degree = P;
    m.gather = W_ / P;
    m.piece = g_ / m.gather;
    if (P <= E_) {
      m.local_experts = E_ / P;
      m.units_per_expert = S_;
      m.local_hidden = H_;
      m.first_expert = m.piece * m.local_experts;
      m.first_slice = 0;
      m.dup = 1;
    } else {
      m.dup = static_cast<int>(P / E_);
      m.local_experts = 1;
      m.units_per_expert = S_ / m.dup;
      m.local_hidden = m.units_per_expert * unit_hidden();
      m.first_expert = m.piece / m.dup;
      m.first_slice = (m.piece % m.dup) * m.units_per_expert;
    }
    return m;
  }
  // Exchange position p's first expert and its expert count under mode m.
  int64_t dest_first_expert(const ExpertMode& m, int p) const {
    return m.dup > 1 ? p / m.dup : int64_t(p) * m.local_experts;
  }

 private:
  int64_t E_ = 1, H_ = 1;
  bool swiglu_ = false;
  int W_ = 1, g_ = 0;
  int64_t S_ = 1;
};

// Copies one unit (w1u (H1u, M), w2u (M, Hu)) into slice k of an expert of
// hidden Hl (w1 (H1l, M), w2 (M, Hl)), or back (to_unit). SwiGLU rows are
// [gate (Hl) | up (Hl)] in the expert and [gate (Hu) | up (Hu)] in the unit.
template <typename T>
void copy_unit(bool to_unit, T* w1u, T* w2u, T* w1, T* w2, int64_t k, int64_t Hu, int64_t Hl, int64_t M,
               bool swiglu) {
  const int64_t parts = swiglu ? 2 : 1;
  for (int64_t part = 0; part < parts; ++part) {
    T* u = w1u + part * Hu * M;
    T* e = w1 + (part * Hl + k * Hu) * M;
    if (to_unit) std::copy(e, e + Hu * M, u);
    else std::copy(u, u + Hu * M, e);
  }
  for (int64_t m = 0; m < M; ++m) {
    T* u = w2u + m * Hu;
    T* e = w2 + m * Hl + k * Hu;
    if (to_unit) std::copy(e, e + Hu, u);
    else std::copy(u, u + Hu, e);
  }
}

}  // namespace sy::moe
