// One JSON object per line, for --json bench output and metrics.jsonl.
#pragma once

#include <cstdint>
#include <string>

namespace sy {

class JsonLine {
 public:
  JsonLine& add(const std::string& key, const std::string& value);
  JsonLine& add(const std::string& key, const char* value) { return add(key, std::string(value)); }
  JsonLine& add(const std::string& key, double value);
  JsonLine& add(const std::string& key, int64_t value);
  JsonLine& add(const std::string& key, int value) { return add(key, static_cast<int64_t>(value)); }
  JsonLine& add(const std::string& key, bool value);
  // A pre-rendered JSON value (array or object).
  JsonLine& add_raw(const std::string& key, const std::string& json);
  std::string str() const { return "{" + body_ + "}"; }

  static std::string quote(const std::string& s);

 private:
  void key(const std::string& k);
  std::string body_;
};

}  // namespace sy
