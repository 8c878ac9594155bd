#include "core/log.hpp"

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <mutex>

namespace sy::log {

namespace {
int g_rank = 0;
Level initial_level() {
  const char* env = std::getenv("SWITCHYARD_LOG");
  if (!env) return Level::Info;
  const std::string v(env);
  if (v == "debug") return Level::Debug;
  if (v == "warn") return Level::Warn;
  if (v == "error") return Level::Error;
  return Level::Info;
}
Level g_level = initial_level();
std::mutex g_mutex;

void emit(Level lvl, const std::string& message) {
  const auto now = std::chrono::system_clock::to_time_t(std::chrono::system_clock::now());
  std::tm tm{};
  localtime_r(&now, &tm);
  char stamp[16];
  std::strftime(stamp, sizeof stamp, "%H:%M:%S", &tm);
  const char* tag = lvl == Level::Warn ? "warning: " : lvl == Level::Error ? "error: " : "";
  std::lock_guard<std::mutex> lock(g_mutex);
  std::fprintf(stderr, "[%s r%d] %s%s\n", stamp, g_rank, tag, message.c_str());
  std::fflush(stderr);
}
}  // namespace

void set_rank(int rank) { g_rank = rank; }
void set_level(Level level) { g_level = level; }
Level level() { return g_level; }
bool enabled(Level lvl) { return static_cast<int>(lvl) >= static_cast<int>(g_level); }

void write(Level lvl, const std::string& message) {
  if (!enabled(lvl)) return;
  if (lvl <= Level::Info && g_rank != 0) return;
  emit(lvl, message);
}

void write_all_ranks(Level lvl, const std::string& message) {
  if (enabled(lvl)) emit(lvl, message);
}

bool stdout_is_watched() {
  static const bool on = [] {
    if (const char* v = std::getenv("SWITCHYARD_PROGRESS")) return std::string(v) == "1";
    return isatty(STDOUT_FILENO) != 0 && std::getenv("OMPI_COMM_WORLD_SIZE") == nullptr &&
           std::getenv("PMI_SIZE") == nullptr && std::getenv("SLURM_STEP_ID") == nullptr;
  }();
  return on;
}

}  // namespace sy::log
