// The router registry (the table itself is in registry.cpp, one line per router).
//
// A router file models/routers/NAME.cpp defines its factory
//   template <typename T> std::unique_ptr<Router<T>> make_NAME(const MoeConfig&, uint64_t seed);
// which validates the config keys it reads (sy::ConfigError naming the key),
// and instantiates it for float and double with SY_INSTANTIATE_ROUTER_FACTORY.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "models/router.hpp"

namespace sy::moe {

template <typename T>
using RouterFactory = std::unique_ptr<Router<T>> (*)(const MoeConfig& config, uint64_t seed);

// The router registered as `name` (any registry name, whatever config.router
// says). Throws sy::ConfigError "unknown router 'X'; known routers: topk, ...".
template <typename T>
std::unique_ptr<Router<T>> make_router_by_name(const std::string& name, const MoeConfig& config, uint64_t seed);

}  // namespace sy::moe

#define SY_INSTANTIATE_ROUTER_FACTORY(factory)                                                 \
  template std::unique_ptr<::sy::moe::Router<float>> factory<float>(const ::sy::MoeConfig&, uint64_t); \
  template std::unique_ptr<::sy::moe::Router<double>> factory<double>(const ::sy::MoeConfig&, uint64_t);
