#include <gtest/gtest.h>

#include "tests/support/test_support.hpp"

namespace sy::test {
std::string binary_path() { return SWITCHYARD_BINARY; }
std::string source_dir() { return SWITCHYARD_SOURCE_DIR; }
}  // namespace sy::test

int main(int argc, char** argv) {
  testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
