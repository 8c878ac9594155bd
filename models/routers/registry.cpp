#include "models/routers/registry.hpp"

#include "core/config.hpp"
#include "core/error.hpp"

namespace sy::moe {

namespace {

template <typename T>
struct Entry {
  const char* name;
  RouterKind kind;
  std::unique_ptr<Router<T>> (*make)(const MoeConfig&, uint64_t);
};

template <typename T>
const std::vector<Entry<T>>& registry() {
#define SY_ROUTER_ENTRY(name, kind, factory) Entry<T>{name, RouterKind::kind, &factory<T>},
  static const std::vector<Entry<T>> entries = {SY_ROUTER_LIST(SY_ROUTER_ENTRY)};
#undef SY_ROUTER_ENTRY
  return entries;
}

std::string known_list() {
  std::string list;
  for (const auto& e : registry<float>()) list += (list.empty() ? "" : ", ") + std::string(e.name);
  return list;
}

}  // namespace

std::vector<std::string> router_names() {
  std::vector<std::string> names;
  for (const auto& e : registry<float>()) names.emplace_back(e.name);
  return names;
}

template <typename T>
std::unique_ptr<Router<T>> make_router(const MoeConfig& config, uint64_t seed) {
  for (const auto& e : registry<T>())
    if (e.kind == config.router) return e.make(config, seed);
  throw ConfigError(std::string("moe.router = '") + to_string(config.router) + "' has no implementation; known routers: " +
                    known_list());
}

template <typename T>
std::unique_ptr<Router<T>> make_router_by_name(const std::string& name, const MoeConfig& config, uint64_t seed) {
  for (const auto& e : registry<T>())
    if (name == e.name) {
      MoeConfig c = config;
      c.router = e.kind;
      return e.make(c, seed);
    }
  throw ConfigError("unknown router '" + name + "'; known routers: " + known_list());
}

template std::unique_ptr<Router<float>> make_router<float>(const MoeConfig&, uint64_t);
template std::unique_ptr<Router<double>> make_router<double>(const MoeConfig&, uint64_t);
template std::unique_ptr<Router<float>> make_router_by_name<float>(const std::string&, const MoeConfig&, uint64_t);
template std::unique_ptr<Router<double>> make_router_by_name<double>(const std::string&, const MoeConfig&, uint64_t);

}  // namespace sy::moe
