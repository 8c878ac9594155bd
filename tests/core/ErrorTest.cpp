#include "core/error.hpp"

#include <gtest/gtest.h>

#include <string>

#include "core/hdf5_check.hpp"

namespace sy {
namespace {

TEST(Errors, RequireNamesExpressionMessageAndLocation) {
  try {
    const int top_k = 3, num_experts = 2;
    SY_REQUIRE(top_k <= num_experts, "top_k " << top_k << " exceeds " << num_experts << " experts");
    FAIL() << "expected a throw";
  } catch (const InvalidArgument& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("top_k <= num_experts"), std::string::npos) << msg;
    EXPECT_NE(msg.find("top_k 3 exceeds 2 experts"), std::string::npos) << msg;
    EXPECT_NE(msg.find("ErrorTest.cpp:"), std::string::npos) << msg;
  }
}

TEST(Errors, TypedExceptionsShareTheBase) {
  EXPECT_THROW(SY_CHECK_AS(CommError, false, "peer gone"), Error);
  EXPECT_THROW(SY_CHECK_AS(IoError, 1 == 2, ""), IoError);
}

TEST(Errors, Hdf5CheckReportsTheCallAndLibraryMessage) {
  H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
  try {
    SY_HDF5_CHECK(H5Fopen("/nonexistent/switchyard.h5", H5F_ACC_RDONLY, H5P_DEFAULT));
    FAIL() << "expected a throw";
  } catch (const IoError& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("H5Fopen(\"/nonexistent/switchyard.h5\""), std::string::npos) << msg;
    EXPECT_NE(msg.find("ErrorTest.cpp:"), std::string::npos) << msg;
  }
  // A success passes the result through.
  const herr_t ok = SY_HDF5_CHECK(H5Eclear2(H5E_DEFAULT));
  EXPECT_GE(ok, 0);
}

}  // namespace
}  // namespace sy
