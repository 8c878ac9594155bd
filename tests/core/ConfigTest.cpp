#include "core/config.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <functional>
#include <sstream>
#include <string>
#include <vector>

#include "core/error.hpp"
#include "tests/support/test_support.hpp"

namespace sy {
namespace {

namespace fs = std::filesystem;
using test::expect_config_error;

fs::path temp_dir() {
  const fs::path dir = fs::path(testing::TempDir()) / "switchyard_config_test";
  fs::create_directories(dir);
  return dir;
}

// Writes text to a fresh INI file under the test temp dir; returns its path.
std::string write_ini(const std::string& name, const std::string& text) {
  const fs::path path = temp_dir() / name;
  std::ofstream(path) << text;
  return path.string();
}

void expect_cli_error(const std::vector<std::string>& overrides, const std::vector<std::string>& parts) {
  expect_config_error([&] { load_config("", overrides); }, parts);
}

TEST(Config, DefaultsLoadAndValidate) {
  const Config c = load_config("", {});
  EXPECT_EQ(to_ini(c), to_ini(Config{}));
  EXPECT_EQ(c.model.dim, 128);
  EXPECT_EQ(c.model.layers, 2);
  EXPECT_EQ(c.model.heads, 4);
  EXPECT_EQ(c.model.vocab_size, 256);
  EXPECT_EQ(c.model.seq_len, 128);
  EXPECT_EQ(c.moe.router, RouterKind::TopK);
  EXPECT_EQ(c.moe.parallel_mode, MoeConfig::kAutoParallelMode);
  EXPECT_EQ(c.moe.pipeline_degree, MoeConfig::kAutoPipelineDegree);
  EXPECT_EQ(c.parallel.a2a_algo, AllToAllAlgo::Auto);
  EXPECT_FALSE(c.parallel.emulate_link.enabled());
  EXPECT_NO_THROW(validate_config(Config{}));
}

TEST(Config, FileValuesAreRead) {
  const std::string path = write_ini("values.ini",
                                     "# a comment\n"
                                     "[model]\n"
                                     "dim = 256   # inline comment\n"
                                     "heads = 8\n"
                                     "position = rope\n"
                                     "tie_embeddings = no\n"
                                     "norm = rmsnorm\n"
                                     "[moe]\n"
                                     "num_experts = 8\n"
                                     "top_k = 1\n"
                                     "router = switch\n"
                                     "capacity_factor = -1.5\n"
                                     "activation = swiglu\n"
                                     "parallel_mode = 2\n"
                                     "pipeline_degree = 4\n"
                                     "router_dtype = bf16\n"
                                     "[parallel]\n"
                                     "a2a_algo = 2dh\n"
                                     "emulate_link = 25, 3.5\n"
                                     "tuning_file = /tmp/tune.txt\n"
                                     "[train]\n"
                                     "lr = 3e-4\n"
                                     "seed = 18446744073709551615\n"
                                     "[data]\n"
                                     "val_fraction = 0\n"
                                     "tokenizer = bpe\n"
                                     "[log]\n"
                                     "dir = \"runs/quoted\"\n"
                                     "routing_trace =\n");
  const Config c = load_config(path, {});
  EXPECT_EQ(c.model.dim, 256);
  EXPECT_EQ(c.model.heads, 8);
  EXPECT_EQ(c.model.position, PositionKind::Rope);
  EXPECT_FALSE(c.model.tie_embeddings);
  EXPECT_EQ(c.model.norm, NormKind::RMSNorm);
  EXPECT_EQ(c.moe.num_experts, 8);
  EXPECT_EQ(c.moe.top_k, 1);
  EXPECT_EQ(c.moe.router, RouterKind::Switch);
  EXPECT_DOUBLE_EQ(c.moe.capacity_factor, -1.5);
  EXPECT_EQ(c.moe.activation, ActivationKind::SwiGLU);
  EXPECT_EQ(c.moe.parallel_mode, 2);
  EXPECT_EQ(c.moe.pipeline_degree, 4);
  EXPECT_EQ(c.moe.router_dtype, DType::BF16);
  EXPECT_EQ(c.parallel.a2a_algo, AllToAllAlgo::TwoDH);
  EXPECT_TRUE(c.parallel.emulate_link.enabled());
  EXPECT_DOUBLE_EQ(c.parallel.emulate_link.gbit_per_s, 25.0);
  EXPECT_DOUBLE_EQ(c.parallel.emulate_link.latency_us, 3.5);
  EXPECT_EQ(c.parallel.tuning_file, "/tmp/tune.txt");
  EXPECT_DOUBLE_EQ(c.train.lr, 3e-4);
  EXPECT_EQ(c.train.seed, 18446744073709551615ull);
  EXPECT_DOUBLE_EQ(c.data.val_fraction, 0.0);
  EXPECT_EQ(c.data.tokenizer, TokenizerKind::BPE);
  EXPECT_EQ(c.log.routing_trace, "");
  EXPECT_EQ(c.log.dir, "runs/quoted");
  // Keys the file does not name keep their defaults.
  EXPECT_EQ(c.model.layers, Config{}.model.layers);
  EXPECT_EQ(c.train.steps, Config{}.train.steps);
}

TEST(Config, CommandLineBeatsFile) {
  const std::string path = write_ini("override.ini", "[moe]\nnum_experts = 8\ntop_k = 2\n[train]\nsteps = 50\n");
  const Config c = load_config(path, {"--moe.top_k=4", "--train.steps", "70", "--model.layers=3"});
  EXPECT_EQ(c.moe.num_experts, 8);  // from the file
  EXPECT_EQ(c.moe.top_k, 4);        // --key=value
  EXPECT_EQ(c.train.steps, 70);     // --key value
  EXPECT_EQ(c.model.layers, 3);     // only on the command line
}

TEST(Config, CommandLineRepeatedKeyTakesTheLastValue) {
  EXPECT_EQ(load_config("", {"--moe.top_k=1", "--moe.top_k=3"}).moe.top_k, 3);
}

TEST(Config, CommandLineAcceptsNegativeAndEmptyValues) {
  const std::string path = write_ini("link.ini", "[parallel]\nemulate_link = 10,2\n[log]\nrouting_trace = trace.bin\n");
  const Config c = load_config(path, {"--moe.capacity_factor", "-2", "--parallel.emulate_link=", "--log.routing_trace", ""});
  EXPECT_DOUBLE_EQ(c.moe.capacity_factor, -2.0);
  EXPECT_FALSE(c.parallel.emulate_link.enabled());
  EXPECT_EQ(c.log.routing_trace, "");
}

TEST(Config, BoolSpellings) {
  for (const char* t : {"true", "1", "yes", "on", "TRUE", "On"})
    EXPECT_TRUE(load_config("", {std::string("--model.tie_embeddings=") + t}).model.tie_embeddings) << t;
  for (const char* f : {"false", "0", "no", "off", "False"})
    EXPECT_FALSE(load_config("", {std::string("--model.tie_embeddings=") + f}).model.tie_embeddings) << f;
  expect_cli_error({"--checkpoint.resume=maybe"}, {"command line", "checkpoint.resume = 'maybe'", "true or false"});
}

TEST(Config, UnknownKeyInFileNamesKeyAndSource) {
  const std::string path = write_ini("unknown.ini", "[moe]\ntopk = 2\n");
  expect_config_error([&] { load_config(path, {}); },
                      {path + ": ", "unknown key 'moe.topk'", "did you mean 'moe.top_k'"});
  // A key outside any section, and a key in the wrong section.
  const std::string bare = write_ini("bare.ini", "top_k = 2\n");
  expect_config_error([&] { load_config(bare, {}); }, {bare, "unknown key 'top_k'", "'moe.top_k'"});
  const std::string wrong = write_ini("wrong_section.ini", "[train]\nnum_experts = 2\n");
  expect_config_error([&] { load_config(wrong, {}); }, {wrong, "'train.num_experts'", "'moe.num_experts'"});
}

TEST(Config, UnknownKeyOnCommandLineNamesKeyAndSource) {
  expect_cli_error({"--moe.topk=3"}, {"command line: unknown key 'moe.topk' (did you mean 'moe.top_k'?)"});
  // A prefix is not guessed into a key.
  expect_cli_error({"--moe.top=3"}, {"command line", "unknown key 'moe.top'"});
  expect_cli_error({"--nonsense_entirely_unrelated=1"}, {"command line", "unknown key 'nonsense_entirely_unrelated'"});
}

TEST(Config, MalformedCommandLineTokens) {
  expect_cli_error({"moe.top_k=3"}, {"command line", "unexpected argument 'moe.top_k=3'", "--section.key=value"});
  expect_cli_error({"--moe.top_k"}, {"command line", "missing value for 'moe.top_k'"});
  expect_cli_error({"--log.dir", "--moe.top_k=3"}, {"command line", "missing value for 'log.dir'"});
  expect_cli_error({"--log.dri", "--moe.top_k=3"}, {"command line", "unknown key 'log.dri'", "'log.dir'"});
}

TEST(Config, WrongTypeNamesKeyAndValue) {
  const std::string path = write_ini("wrong_type.ini", "[moe]\ntop_k = abc\n");
  expect_config_error([&] { load_config(path, {}); },
                      {path + ": moe.top_k = 'abc': expected a positive integer"});
  expect_cli_error({"--model.dim=12.5"}, {"command line: model.dim = '12.5': expected a positive integer"});
  expect_cli_error({"--train.lr=fast"}, {"command line: train.lr = 'fast': expected a number > 0"});
  expect_cli_error({"--train.lr=nan"}, {"train.lr = 'nan'"});
  expect_cli_error({"--train.seed=-1"}, {"train.seed = '-1'", "an integer >= 0"});
  expect_cli_error({"--train.steps=99999999999999999999999"}, {"train.steps = '99999999999999999999999'"});
}

TEST(Config, OutOfRangeIsRejected) {
  const std::string path = write_ini("range.ini", "[moe]\ntop_k = 0\n");
  expect_config_error([&] { load_config(path, {}); }, {path + ": moe.top_k = '0': expected a positive integer"});
  expect_cli_error({"--data.val_fraction=1.5"}, {"command line: data.val_fraction = '1.5': expected a number in [0, 1)"});
  expect_cli_error({"--data.val_fraction=1"}, {"data.val_fraction = '1'"});
  expect_cli_error({"--moe.top_p=0"}, {"moe.top_p = '0'", "(0, 1]"});
  expect_cli_error({"--parallel.timeout_s=0"}, {"parallel.timeout_s = '0'", "> 0"});
  expect_cli_error({"--bench.threads=0"}, {"bench.threads = '0'"});
  expect_cli_error({"--moe.jitter=-0.1"}, {"moe.jitter = '-0.1'", ">= 0"});
  expect_cli_error({"--moe.pipeline_degree=3"}, {"moe.pipeline_degree = '3'", "one of auto, 1, 2, 4, 8"});
  expect_cli_error({"--moe.parallel_mode=-2"}, {"moe.parallel_mode = '-2'", "auto or an integer >= 0"});
  expect_cli_error({"--parallel.emulate_link=10"}, {"parallel.emulate_link = '10'", "<Gbit/s>,<latency us>"});
  expect_cli_error({"--parallel.emulate_link=10,0"}, {"parallel.emulate_link = '10,0'"});
  expect_cli_error({"--log.dir=runs#1"}, {"log.dir = 'runs#1'"});
}

TEST(Config, BadChoiceListsTheChoices) {
  const std::string path = write_ini("choice.ini", "[moe]\nrouter = topq\n");
  expect_config_error([&] { load_config(path, {}); },
                      {path + ": moe.router = 'topq': expected one of topk, switch, expert_choice, topp, "
                              "null_experts, sigmoid_bias, hash"});
  expect_cli_error({"--parallel.a2a_algo=ring"}, {"parallel.a2a_algo = 'ring'", "linear, 2dh, flowsplit, auto"});
  expect_cli_error({"--train.dtype=fp16"}, {"train.dtype = 'fp16'", "one of fp32, bf16"});
}

TEST(Config, CrossKeyConflictsNameKeysAndValues) {
  const std::string path = write_ini("heads.ini", "[model]\ndim = 130\n");
  expect_config_error([&] { load_config(path, {}); },
                      {path + ": model.dim = 130 is not divisible by model.heads = 4"});
  expect_config_error([&] { load_config(path, {"--model.heads=3"}); }, {path, "command line", "model.heads = 3"});
  expect_cli_error({"--moe.top_k=5"}, {"command line: moe.top_k = 5 exceeds moe.num_experts = 4"});
  expect_cli_error({"--moe.router=null_experts", "--moe.num_null_experts=1", "--moe.top_k=6"},
                   {"moe.top_k = 6 exceeds moe.num_experts + moe.num_null_experts = 4 + 1"});
  EXPECT_NO_THROW(load_config("", {"--moe.router=null_experts", "--moe.num_null_experts=1", "--moe.top_k=5"}));
  expect_cli_error({"--moe.router=null_experts"}, {"moe.router = null_experts needs moe.num_null_experts >= 1"});
  expect_cli_error({"--moe.num_null_experts=2"}, {"moe.num_null_experts = 2 is used only by moe.router = null_experts"});
  expect_cli_error({"--moe.router=switch"}, {"moe.router = switch", "moe.top_k must be 1"});
  expect_cli_error({"--moe.router=expert_choice", "--moe.capacity_factor=0"},
                   {"moe.router = expert_choice", "moe.capacity_factor must be > 0"});
  expect_cli_error({"--moe.every=3"}, {"moe.every = 3 exceeds model.layers = 2"});
  expect_cli_error({"--model.position=rope", "--model.dim=12", "--model.heads=4"}, {"model.position = rope", "even"});
  expect_cli_error({"--model.vocab_size=100"}, {"data.tokenizer = byte needs model.vocab_size >= 256"});
  expect_cli_error({"--parallel.tp=3"}, {"model.heads = 4 is not divisible by parallel.tp = 3"});
  expect_cli_error({"--parallel.ep=3"}, {"parallel.ep = 3 must divide moe.num_experts = 4"});
  expect_cli_error({"--checkpoint.resume=true"}, {"checkpoint.resume = true needs checkpoint.dir"});
}

TEST(Config, MissingFileNamesThePath) {
  const std::string path = (temp_dir() / "does_not_exist.ini").string();
  expect_config_error([&] { load_config(path, {}); }, {path + ": cannot open config file"});
  expect_config_error([&] { load_config(temp_dir().string(), {}); }, {temp_dir().string(), "directory"});
}

TEST(Config, SyntaxErrorNamesFileAndLine) {
  const std::string path = write_ini("syntax.ini", "[model]\ndim = 64\nthis line has no equals sign\n");
  expect_config_error([&] { load_config(path, {}); },
                      {path + ": line 3: cannot parse 'this line has no equals sign'"});
  const std::string twice = write_ini("twice.ini", "[moe]\ntop_k = 1\ntop_k = 2\n");
  expect_config_error([&] { load_config(twice, {}); }, {twice, "'moe.top_k' is given more than once"});
}

TEST(Config, ToIniRoundTrip) {
  const Config c = load_config("", {"--model.dim=96", "--model.heads=6", "--model.position=rope", "--model.norm=rmsnorm",
                                    "--moe.router=topp", "--moe.top_p=0.35", "--moe.capacity_factor=-1.25",
                                    "--moe.parallel_mode=1", "--moe.pipeline_degree=8", "--moe.jitter=0.01",
                                    "--parallel.emulate_link=12.5,7", "--parallel.tuning_file=tune/table.txt",
                                    "--train.lr=0.0003", "--train.seed=42", "--train.dtype=bf16",
                                    "--data.path=data/tiny.h5", "--checkpoint.dir=ckpt", "--checkpoint.every=20",
                                    "--checkpoint.resume=yes", "--log.every=1", "--bench.threads=4"});
  const std::string text = to_ini(c);
  for (const char* line : {"[model]\n", "[moe]\n", "[parallel]\n", "[train]\n", "[data]\n", "[checkpoint]\n",
                           "[log]\n", "[bench]\n", "dim = 96\n", "router = topp\n", "emulate_link = 12.5,7\n",
                           "resume = true\n", "routing_trace =\n"})
    EXPECT_NE(text.find(line), std::string::npos) << line << " missing from\n" << text;
  const std::string path = write_ini("roundtrip.ini", text);
  const Config back = load_config(path, {});
  EXPECT_EQ(to_ini(back), text);
  EXPECT_EQ(back.model.dim, 96);
  EXPECT_EQ(back.moe.router, RouterKind::TopP);
  EXPECT_DOUBLE_EQ(back.moe.top_p, 0.35);
  EXPECT_DOUBLE_EQ(back.moe.capacity_factor, -1.25);
  EXPECT_DOUBLE_EQ(back.train.lr, 0.0003);
  EXPECT_EQ(back.parallel.tuning_file, "tune/table.txt");
  EXPECT_TRUE(back.checkpoint.resume);
  // Every key appears exactly once.
  for (const auto& key : config_keys()) {
    std::string leaf = "\n";  // built step by step: GCC 12 warns falsely (-Wrestrict) on "\n" + substr
    leaf += key.substr(key.find('.') + 1);
    leaf += " =";
    EXPECT_NE(text.find(leaf), std::string::npos) << key;
  }
}

TEST(Config, WriteResolvedConfigWritesALoadableFile) {
  const fs::path dir = temp_dir() / "resolved" / "nested";
  fs::remove_all(temp_dir() / "resolved");
  const Config c = load_config("", {"--moe.num_experts=8", "--train.steps=7"});
  write_resolved_config(c, dir.string());
  ASSERT_TRUE(fs::exists(dir / "config.ini"));
  const Config back = load_config((dir / "config.ini").string(), {});
  EXPECT_EQ(to_ini(back), to_ini(c));
  EXPECT_EQ(back.moe.num_experts, 8);
  // A directory that cannot be made is an IoError.
  const std::string blocker = write_ini("blocker_file", "x");
  EXPECT_THROW(write_resolved_config(c, blocker + "/sub"), IoError);
}

TEST(Config, ValidateConfigChecksConfigsBuiltInCode) {
  Config c;
  c.moe.top_k = 0;
  expect_config_error([&] { validate_config(c); }, {"config: moe.top_k = '0': expected a positive integer"});
  c = Config{};
  c.model.heads = 5;
  expect_config_error([&] { validate_config(c); }, {"config: model.dim = 128 is not divisible by model.heads = 5"});
}

TEST(Config, HelpListsEveryKeyWithDefaultAndChoices) {
  const std::string help = config_help();
  for (const auto& key : config_keys()) EXPECT_NE(help.find("  " + key + " "), std::string::npos) << key;
  EXPECT_NE(help.find("one of topk, switch, expert_choice, topp, null_experts, sigmoid_bias, hash"), std::string::npos);
  std::istringstream lines(help);
  std::string line;
  size_t key_lines = 0;
  while (std::getline(lines, line))
    if (line.rfind("  ", 0) == 0) ++key_lines;
  EXPECT_EQ(key_lines, config_keys().size());
  // The fixed key names of DESIGN.md section 9.
  for (const char* key : {"model.dim", "model.layers", "model.heads", "model.vocab_size", "model.seq_len",
                          "moe.num_experts", "moe.top_k", "moe.top_p", "moe.hidden_size", "moe.activation",
                          "moe.router", "moe.capacity_factor", "moe.drop_policy", "moe.balance", "moe.balance_coeff",
                          "moe.z_loss_coeff", "moe.num_null_experts", "moe.num_shared_experts", "moe.every",
                          "moe.parallel_mode", "moe.pipeline_degree", "parallel.dp", "parallel.ep", "parallel.tp",
                          "parallel.ranks_per_node", "parallel.a2a_algo", "parallel.emulate_link",
                          "parallel.tuning_file", "parallel.timeout_s", "train.steps", "train.seed",
                          "train.micro_batch_size", "train.micro_batches", "train.lr", "train.warmup_steps",
                          "train.weight_decay", "train.grad_clip", "train.dtype", "data.path", "data.tokenizer",
                          "data.val_fraction", "checkpoint.dir", "checkpoint.every", "checkpoint.resume", "log.dir",
                          "log.every", "log.routing_trace", "bench.tokens", "bench.steps", "bench.warmup",
                          "bench.threads"})
    EXPECT_NE(std::find(config_keys().begin(), config_keys().end(), key), config_keys().end()) << key;
}

TEST(Config, ChoiceNames) {
  EXPECT_STREQ(to_string(RouterKind::ExpertChoice), "expert_choice");
  EXPECT_STREQ(to_string(RouterKind::SigmoidBias), "sigmoid_bias");
  EXPECT_STREQ(to_string(AllToAllAlgo::TwoDH), "2dh");
  EXPECT_STREQ(to_string(BalanceKind::Global), "global");
  EXPECT_STREQ(to_string(ActivationKind::SwiGLU), "swiglu");
}

TEST(Config, EveryFileUnderConfigsLoads) {
  const fs::path root = fs::path(test::source_dir()) / "configs";
  ASSERT_TRUE(fs::is_directory(root)) << root;
  int files = 0;
  for (const auto& entry : fs::recursive_directory_iterator(root)) {
    if (!entry.is_regular_file() || entry.path().extension() != ".ini") continue;
    if (entry.path().parent_path().filename() == "net") continue;  // netsim configs: tests/parallel/NetsimTest.cpp
    ++files;
    try {
      const Config c = load_config(entry.path().string(), {});
      validate_config(c);
    } catch (const std::exception& e) {
      ADD_FAILURE() << entry.path() << ": " << e.what();
    }
  }
  EXPECT_GE(files, 13);  // demo, 7 routers, 4 parallel layouts, 1 bench
}

TEST(Config, ShippedConfigsSayWhatTheyPromise) {
  const std::string dir = test::source_dir() + "/configs/";
  const Config demo = load_config(dir + "demo.ini", {});
  EXPECT_EQ(demo.model.layers, 2);
  EXPECT_EQ(demo.moe.num_experts, 4);
  EXPECT_EQ(demo.moe.top_k, 2);
  EXPECT_EQ(demo.moe.every, 1);

  const Config bench = load_config(dir + "bench/moe-layer.ini", {});
  EXPECT_EQ(bench.bench.tokens, 8192);
  EXPECT_EQ(bench.model.dim, 512);
  EXPECT_EQ(bench.moe.hidden_size, 2048);
  EXPECT_EQ(bench.moe.num_experts, 4);
  EXPECT_EQ(bench.moe.top_k, 2);
  EXPECT_DOUBLE_EQ(bench.moe.capacity_factor, 1.0);
  EXPECT_EQ(bench.moe.activation, ActivationKind::ReLU);
  EXPECT_EQ(bench.moe.router, RouterKind::TopK);
  EXPECT_EQ(bench.bench.steps, 10);
  EXPECT_EQ(bench.bench.warmup, 3);
  EXPECT_EQ(bench.bench.threads, 2);

  for (const char* router : {"topk", "switch", "expert_choice", "topp", "null_experts", "sigmoid_bias", "hash"}) {
    const Config c = load_config(dir + "routers/" + router + ".ini", {});
    EXPECT_STREQ(to_string(c.moe.router), router);
  }
  struct Layout {
    const char* file;
    int dp, ep, tp;
  };
  for (const Layout& l : {Layout{"dp2", 2, 1, 1}, Layout{"ep2", 1, 2, 1}, Layout{"ep2_dp2", 2, 2, 1},
                          Layout{"tp2_dp2", 2, 1, 2}}) {
    const Config c = load_config(dir + "parallel/" + l.file + ".ini", {});
    EXPECT_EQ(c.parallel.dp, l.dp) << l.file;
    EXPECT_EQ(c.parallel.ep, l.ep) << l.file;
    EXPECT_EQ(c.parallel.tp, l.tp) << l.file;
  }
}

}  // namespace
}  // namespace sy
