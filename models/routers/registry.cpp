// Name -> factory for every router. Adding a router: its file in
// models/routers/ plus one line in kRouterTable below.
#include "models/routers/registry.hpp"

#include "core/config.hpp"
#include "core/error.hpp"

namespace sy::moe {

// The table, in the order router_names() lists them: {config name, factory
// defined in models/routers/<name>.cpp}. It is a macro so that the same line
// also declares the factory; nothing else in the code base names a router.
#define SY_ROUTER_TABLE(X)                 \
  X("topk", make_topk)                     \
  X("switch", make_switch)                 \
  X("expert_choice", make_expert_choice)   \
  X("topp", make_topp)                     \
  X("null_experts", make_null_experts)     \
  X("sigmoid_bias", make_sigmoid_bias)     \
  X("hash", make_hash)

#define SY_DECLARE_ROUTER_FACTORY(name, factory) \
  template <typename T>                          \
  std::unique_ptr<Router<T>> factory(const MoeConfig& config, uint64_t seed);
SY_ROUTER_TABLE(SY_DECLARE_ROUTER_FACTORY)
#undef SY_DECLARE_ROUTER_FACTORY

namespace {

template <typename T>
struct RouterEntry {
  const char* name;
  RouterFactory<T> make;
};

#define SY_ROUTER_ENTRY(name, factory) RouterEntry<T>{name, &factory<T>},
template <typename T>
constexpr RouterEntry<T> kRouterTable[] = {SY_ROUTER_TABLE(SY_ROUTER_ENTRY)};
#undef SY_ROUTER_ENTRY

std::string known_routers() {
  std::string list;
  for (const auto& entry : kRouterTable<float>) list += (list.empty() ? "" : ", ") + std::string(entry.name);
  return list;
}

}  // namespace

std::vector<std::string> router_names() {
  std::vector<std::string> names;
  for (const auto& entry : kRouterTable<float>) names.emplace_back(entry.name);
  return names;
}

template <typename T>
std::unique_ptr<Router<T>> make_router_by_name(const std::string& name, const MoeConfig& config, uint64_t seed) {
  for (const auto& entry : kRouterTable<T>) {
    if (name != entry.name) continue;
    SY_CHECK_AS(ConfigError, config.num_experts >= 1,
                "moe.num_experts = " << config.num_experts << ": router " << name << " needs at least 1 expert");
    return entry.make(config, seed);
  }
  throw ConfigError("unknown router '" + name + "'; known routers: " + known_routers());
}

template <typename T>
std::unique_ptr<Router<T>> make_router(const MoeConfig& config, uint64_t seed) {
  // The registry names are the config spellings of RouterKind (to_string).
  return make_router_by_name<T>(to_string(config.router), config, seed);
}

template std::unique_ptr<Router<float>> make_router<float>(const MoeConfig&, uint64_t);
template std::unique_ptr<Router<double>> make_router<double>(const MoeConfig&, uint64_t);
template std::unique_ptr<Router<float>> make_router_by_name<float>(const std::string&, const MoeConfig&, uint64_t);
template std::unique_ptr<Router<double>> make_router_by_name<double>(const std::string&, const MoeConfig&, uint64_t);

}  // namespace sy::moe
