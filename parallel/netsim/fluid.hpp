// Flow-level fluid model: max-min fair rates, recomputed whenever flows finish.
//
// Flows are grouped in classes of identical flows: `members` flows of `bytes`
// each that cross the same links and so always see the same rate r. A class
// loads link l with members * coef_l * r: coef_l is 1 for a link on the flow's
// path and 1/p per path through l for a flow sprayed over p paths.
//
// Rates are weighted max-min fair (progressive filling): every unfinished flow's
// rate rises together until a link fills; the flows through it keep that rate;
// the others rise on. When the first flows finish, the rates are recomputed for
// those left. completion_time() is when the last byte arrives.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace sy::net {

class FluidNetwork {
 public:
  explicit FluidNetwork(std::vector<double> capacity);  // (links,) bytes per second, > 0 where used

  // A class of `members` flows of `bytes` each over links[i] with per-flow coefs[i]
  // (each link once). Returns its index.
  int add_class(double bytes, double members, const int32_t* links, const double* coefs, int n);

  size_t classes() const { return bytes_.size(); }
  size_t incidences() const { return link_.size(); }

  // Seconds until every class has finished, all starting at time 0. `events`
  // (optional) receives the number of rate recomputations.
  double completion_time(int64_t* events = nullptr) const;

  // The max-min fair per-flow rate of every class with all classes active (for tests).
  std::vector<double> fair_rates() const;

 private:
  struct Transpose {
    std::vector<int64_t> first;     // (links + 1,) into classes
    std::vector<int32_t> classes;   // the classes through each link
  };
  Transpose transpose(const std::vector<uint8_t>& active) const;
  void fill(const std::vector<uint8_t>& active, const Transpose& by_link, std::vector<double>& rate) const;

  std::vector<double> capacity_;  // (links,)
  std::vector<double> bytes_;     // (classes,) per flow
  std::vector<int64_t> begin_;    // (classes + 1,) into link_ / coef_
  std::vector<int32_t> link_;     // (incidences,)
  std::vector<double> coef_;      // (incidences,) members * per-flow coef
};

}  // namespace sy::net
