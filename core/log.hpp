// Logging: readable lines with time and rank, to stderr.
//   [12:04:31 r0] message
// Info lines are printed by rank 0 only (every rank would repeat them);
// warnings and errors by every rank. SWITCHYARD_LOG=debug|info|warn|error sets the level.
#pragma once

#include <sstream>
#include <string>

namespace sy::log {

enum class Level { Debug = 0, Info = 1, Warn = 2, Error = 3 };

void set_rank(int rank);
void set_level(Level level);
Level level();
bool enabled(Level level);
void write(Level level, const std::string& message);
// Prints on every rank regardless of the rank filter (still obeys the level).
void write_all_ranks(Level level, const std::string& message);
// Whether a person watches stdout (progress bars, colour). Under mpirun a
// rank's stdout is a pty whatever mpirun's own stdout is, so there
// SWITCHYARD_PROGRESS=1|0 (set by launch/mpirun.sh from its own terminal)
// decides; without it, a terminal outside mpirun/srun.
bool stdout_is_watched();

}  // namespace sy::log

#define SY_LOG(level, msg)                                    \
  do {                                                        \
    if (::sy::log::enabled(level)) {                          \
      std::ostringstream sy_log_os_;                          \
      sy_log_os_ << msg;                                      \
      ::sy::log::write(level, sy_log_os_.str());              \
    }                                                         \
  } while (0)
#define SY_LOG_DEBUG(msg) SY_LOG(::sy::log::Level::Debug, msg)
#define SY_LOG_INFO(msg) SY_LOG(::sy::log::Level::Info, msg)
#define SY_LOG_WARN(msg) SY_LOG(::sy::log::Level::Warn, msg)
#define SY_LOG_ERROR(msg) SY_LOG(::sy::log::Level::Error, msg)
