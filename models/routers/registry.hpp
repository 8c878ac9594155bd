// The router registry: one line per router in SY_ROUTER_LIST (registry.cpp
// is the only other place that names them). A router file defines
//   template <typename T> std::unique_ptr<Router<T>> make_NAME(const MoeConfig&, uint64_t seed);
// and instantiates it with SY_INSTANTIATE_ROUTER_FACTORY(make_NAME).
#pragma once

#include <memory>
#include <string>

#include "models/router.hpp"

namespace sy::moe {

// config name, RouterKind, factory
#define SY_ROUTER_LIST(X)                        \
  X("topk", TopK, make_topk)                     \
  X("switch", Switch, make_switch)               \
  X("expert_choice", ExpertChoice, make_expert_choice) \
  X("topp", TopP, make_topp)                     \
  X("null_experts", NullExperts, make_null_experts) \
  X("sigmoid_bias", SigmoidBias, make_sigmoid_bias) \
  X("hash", Hash, make_hash)

#define SY_DECLARE_ROUTER_FACTORY(name, kind, factory) \
  template <typename T>                                \
  std::unique_ptr<Router<T>> factory(const MoeConfig& config, uint64_t seed);
SY_ROUTER_LIST(SY_DECLARE_ROUTER_FACTORY)
#undef SY_DECLARE_ROUTER_FACTORY

#define SY_INSTANTIATE_ROUTER_FACTORY(factory)                                   \
  template std::unique_ptr<Router<float>> factory<float>(const MoeConfig&, uint64_t); \
  template std::unique_ptr<Router<double>> factory<double>(const MoeConfig&, uint64_t);

// The router called `name`; throws ConfigError listing the known routers.
template <typename T>
std::unique_ptr<Router<T>> make_router_by_name(const std::string& name, const MoeConfig& config, uint64_t seed);

}  // namespace sy::moe
