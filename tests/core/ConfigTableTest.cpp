// The generic config table (core/config_table.hpp): list values, and a table
// of a struct other than the trainer's Config loading, checking and printing
// with the same rules.
#include "core/config_table.hpp"

#include <gtest/gtest.h>

#include <array>
#include <string>
#include <vector>

namespace sy::cfg {
namespace {

TEST(ConfigTable, ListOfNumbersParsesAndFormatsBack) {
  const auto codec = list_of(positive_real());
  const auto v = codec.parse("1, 16,256 ");
  ASSERT_TRUE(v.has_value());
  EXPECT_EQ(*v, (std::vector<double>{1, 16, 256}));
  EXPECT_EQ(codec.format(*v), "1, 16, 256");
  EXPECT_EQ(codec.parse(codec.format(*v)), v);
  for (const char* bad : {"", "1,", ",1", "1,,2", "1, -2", "1; 2", "x"}) EXPECT_FALSE(codec.parse(bad)) << bad;
  EXPECT_NE(codec.allowed().find("comma-separated"), std::string::npos);
}

struct Sizes {
  std::vector<double> mib = {1};
  int repeat = 2;
};
struct Toy {
  Sizes sizes;
};

const KeyTable<Toy>& toy_table() {
  static const KeyTable<Toy> table = {
      key("sizes.mib", &Toy::sizes, &Sizes::mib, list_of(positive_real()), "sizes"),
      key("sizes.repeat", &Toy::sizes, &Sizes::repeat, positive<int>(), "repeats"),
  };
  return table;
}

TEST(ConfigTable, AnotherStructLoadsWithTheSameRules) {
  Toy toy;
  const Settings settings = read_settings("", {"--sizes.mib=2, 4", "--sizes.repeat", "3"}, key_names(toy_table()));
  const auto sources = apply_settings(toy_table(), settings, toy);
  EXPECT_EQ(toy.sizes.mib, (std::vector<double>{2, 4}));
  EXPECT_EQ(toy.sizes.repeat, 3);
  EXPECT_EQ(sources.at("sizes.mib"), "command line");
  EXPECT_EQ(table_ini(toy_table(), toy, "toy"), "# toy\n[sizes]\nmib = 2, 4\nrepeat = 3\n");
  EXPECT_NE(table_help(toy_table()).find("  sizes.repeat"), std::string::npos);
  try {
    read_settings("", {"--sizes.mi=2"}, key_names(toy_table()));
    ADD_FAILURE() << "an unknown key loaded";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("did you mean 'sizes.mib'"), std::string::npos) << e.what();
  }
  Toy bad;
  EXPECT_THROW(apply_settings(toy_table(), read_settings("", {"--sizes.repeat=0"}, key_names(toy_table())), bad),
               ConfigError);
}

}  // namespace
}  // namespace sy::cfg
