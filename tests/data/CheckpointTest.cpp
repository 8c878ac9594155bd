// Checkpoints on one rank: bitwise round trips (float, double, and across the
// two), replicated and permuted runs, atomic publication and retention, every
// damaged or mismatched checkpoint refused with one line naming the tensor or
// the file, and the config comparison used on resume.
// The multi-rank side (resharding, failures on one rank) is CheckpointMpiTest.cpp.
#include "data/checkpoint.hpp"

#include <gtest/gtest.h>
#include <hdf5.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "core/config.hpp"
#include "core/error.hpp"
#include "tests/support/test_support.hpp"

namespace sy::data {
namespace {

namespace fs = std::filesystem;

// One rank and no MPI: every collective is a copy (or nothing).
class SoloComm : public par::Communicator {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  const std::string& name() const override { return name_; }
  par::RequestPtr iallreduce(const void* send, void* recv, int64_t count, par::ElemType type, par::ReduceOp) override {
    copy(send, recv, count, type);
    return done();
  }
  par::RequestPtr ireduce_scatter(const void* send, void* recv, int64_t count, par::ElemType type,
                                  par::ReduceOp) override {
    copy(send, recv, count, type);
    return done();
  }
  par::RequestPtr iall_gather(const void* send, void* recv, int64_t count, par::ElemType type) override {
    copy(send, recv, count, type);
    return done();
  }
  par::RequestPtr ialltoallv(const void* send, const int64_t* send_counts, const int64_t* send_displs, void* recv,
                             const int64_t*, const int64_t* recv_displs, par::ElemType type) override {
    const size_t e = par::elem_size(type);
    copy(static_cast<const char*>(send) + send_displs[0] * e, static_cast<char*>(recv) + recv_displs[0] * e,
         send_counts[0], type);
    return done();
  }
  par::RequestPtr ibroadcast(void*, int64_t, par::ElemType, int) override { return done(); }
  par::RequestPtr isend(const void*, int64_t, par::ElemType, int, int) override { throw std::logic_error("solo"); }
  par::RequestPtr irecv(void*, int64_t, par::ElemType, int, int) override { throw std::logic_error("solo"); }
  par::RequestPtr ibarrier() override { return done(); }

 private:
  struct Done : par::Request {
    bool test() override { return true; }
    void wait() override {}
  };
  static par::RequestPtr done() { return std::make_unique<Done>(); }
  static void copy(const void* send, void* recv, int64_t count, par::ElemType type) {
    if (send != recv) std::memcpy(recv, send, size_t(count) * par::elem_size(type));
  }
  std::string name_ = "solo";
};

// A tensor and the buffers behind its arrays.
template <typename T>
struct Held {
  std::string name;
  int64_t global_numel = 0;
  std::vector<CheckpointRun> runs;
  std::vector<std::string> array_names = {"param", "adam_m", "adam_v"};
  std::vector<std::vector<T>> buffers;  // per array: (local_numel)

  Held(std::string n, int64_t numel, std::vector<CheckpointRun> r, int64_t local_numel)
      : name(std::move(n)),
        global_numel(numel),
        runs(std::move(r)),
        buffers(array_names.size(), std::vector<T>(size_t(local_numel), T(0))) {}

  CheckpointTensor<T> view() {
    CheckpointTensor<T> t{name, global_numel, runs, {}, int64_t(buffers[0].size())};
    for (size_t a = 0; a < array_names.size(); ++a) t.arrays.push_back({array_names[a], buffers[a].data()});
    return t;
  }
  // Fills each run with value(array, global index).
  template <typename Fn>
  void fill(Fn value) {
    for (const CheckpointRun& r : runs)
      for (int64_t i = 0; i < r.count; ++i)
        for (size_t a = 0; a < buffers.size(); ++a) buffers[a][size_t(r.local_offset + i)] = value(a, r.global_begin + i);
  }
};

template <typename T>
std::vector<CheckpointTensor<T>> views(std::vector<Held<T>>& held) {
  std::vector<CheckpointTensor<T>> v;
  for (auto& h : held) v.push_back(h.view());
  return v;
}

// Awkward values: signed zeros, subnormals, infinities, NaN, then random ones.
template <typename T>
std::vector<T> global_values(int64_t n, uint64_t seed) {
  std::vector<T> v = test::random_vector<T>(size_t(n), seed, -3.0, 3.0);
  const T special[] = {T(0), -T(0), std::numeric_limits<T>::denorm_min(), std::numeric_limits<T>::infinity(),
                       -std::numeric_limits<T>::infinity(), std::numeric_limits<T>::quiet_NaN(),
                       std::numeric_limits<T>::max()};
  for (size_t i = 0; i < std::size(special) && i < v.size(); ++i) v[i * 3] = special[i];
  return v;
}

std::string read_text(const fs::path& path) {
  std::ifstream in(path);
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  return text;
}

std::vector<std::string> entries(const fs::path& dir) {
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(dir)) names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  return names;
}

CheckpointMeta sample_meta(int64_t step) {
  CheckpointMeta meta;
  meta.step = step;
  meta.layout = "dp=1 ep=1 tp=1";
  meta.config_ini = to_ini(Config{});
  meta.ints = {{"sampler.epoch", 3}, {"sampler.position", -7}, {"rng.seed", int64_t(1) << 60}};
  meta.reals = {{"loss_scale", 0.5}, {"tokens_seen", 1.25e12}};
  return meta;
}

// Expects fn to throw E with every one of parts in its one-line message.
template <typename E, typename Fn>
void expect_error(Fn fn, const std::vector<std::string>& parts) {
  try {
    fn();
    ADD_FAILURE() << "no exception; expected one naming " << ::testing::PrintToString(parts);
  } catch (const E& e) {
    const std::string what = e.what();
    EXPECT_EQ(what.find('\n'), std::string::npos) << what;
    for (const std::string& p : parts) EXPECT_NE(what.find(p), std::string::npos) << "'" << p << "' not in: " << what;
  }
}

class Checkpoint : public testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("sy_ckpt_" + std::to_string(::getpid()) + "_" + testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
  }
  void TearDown() override {
    detail::checkpoint_write_hook() = nullptr;
    std::error_code ec;
    fs::permissions(dir_, fs::perms::owner_all, fs::perm_options::add, ec);
    fs::remove_all(dir_, ec);
  }
  std::string dir() const { return dir_.string(); }

  // Two tensors of 100 and 10 elements, values g(a, i), saved at step.
  std::string save_small(int64_t step, int keep = 0) {
    std::vector<Held<float>> held;
    held.emplace_back("layers.0.w", 100, std::vector<CheckpointRun>{{50, 50, 0}, {0, 50, 50}}, 100);
    held.emplace_back("bias", 10, std::vector<CheckpointRun>{{0, 10, 0}}, 10);
    for (auto& h : held) h.fill([&](size_t a, int64_t i) { return float(step * 1000 + int64_t(a) * 100 + i); });
    return save_checkpoint(dir(), sample_meta(step), views(held), comm_, keep);
  }
  // Loads tensor `name` (numel elements, whole) and returns its param array.
  std::vector<float> load_whole(const std::string& path, const std::string& name, int64_t numel,
                                std::vector<std::string> arrays = {"param"}) {
    Held<float> h(name, numel, {{0, numel, 0}}, numel);
    h.array_names = std::move(arrays);
    h.buffers.resize(h.array_names.size(), std::vector<float>(size_t(numel), 0.f));
    load_checkpoint(path, std::vector<CheckpointTensor<float>>{h.view()}, comm_);
    return h.buffers[0];
  }

  fs::path dir_;
  SoloComm comm_;
};

// ---- round trips ----------------------------------------------------------------

template <typename T>
void round_trip(const std::string& dir, par::Communicator& comm) {
  // Names with dots, a slash, a percent sign and a leading dot; runs out of order and permuted locally.
  const int64_t n0 = 1000, n1 = 37, n2 = 1;
  const auto g0 = global_values<T>(n0, 1), g1 = global_values<T>(n1, 2), g2 = global_values<T>(n2, 3);
  const std::vector<const std::vector<T>*> globals = {&g0, &g1, &g2};
  std::vector<Held<T>> held;
  held.emplace_back("layers.0.attn.qkv_weight", n0,
                    std::vector<CheckpointRun>{{600, 400, 0}, {0, 300, 400}, {300, 300, 700}}, n0);
  held.emplace_back("experts/0%up", n1, std::vector<CheckpointRun>{{0, 37, 5}}, n1 + 5);
  held.emplace_back(".hidden", n2, std::vector<CheckpointRun>{{0, 1, 0}, {0, 0, 1}}, n2);
  for (size_t t = 0; t < held.size(); ++t)
    held[t].fill([&](size_t a, int64_t i) { return a == 0 ? (*globals[t])[size_t(i)] : T(double(i) * (a + 1) - 0.5); });
  const CheckpointMeta meta = sample_meta(12);
  const std::string step_dir = save_checkpoint(dir, meta, views(held), comm);

  EXPECT_EQ(step_dir, (fs::path(dir) / "step-00000012").string());
  EXPECT_EQ(read_text(fs::path(dir) / "latest"), "step-00000012\n");
  EXPECT_EQ(entries(dir), (std::vector<std::string>{"latest", "step-00000012"}));
  EXPECT_EQ(entries(step_dir), (std::vector<std::string>{"config.ini", "meta.h5", "rank-00000.h5"}));
  EXPECT_EQ(read_text(fs::path(step_dir) / "config.ini"), meta.config_ini);
  EXPECT_EQ(resolve_checkpoint(dir), step_dir);
  EXPECT_EQ(resolve_checkpoint(step_dir), step_dir);

  // Same layout: bitwise, whatever the value (NaN included).
  std::vector<Held<T>> back;
  for (const Held<T>& h : held) back.emplace_back(h.name, h.global_numel, h.runs, int64_t(h.buffers[0].size()));
  const CheckpointMeta got = load_checkpoint(dir, views(back), comm);
  for (size_t t = 0; t < held.size(); ++t)
    for (size_t a = 0; a < held[t].buffers.size(); ++a)
      EXPECT_EQ(std::memcmp(back[t].buffers[a].data(), held[t].buffers[a].data(), held[t].buffers[a].size() * sizeof(T)), 0)
          << held[t].name << " array " << a;

  // Another layout: one run per tensor, in global order.
  std::vector<Held<T>> whole;
  for (const Held<T>& h : held)
    whole.emplace_back(h.name, h.global_numel, std::vector<CheckpointRun>{{0, h.global_numel, 0}}, h.global_numel);
  load_checkpoint(step_dir, views(whole), comm);
  for (size_t t = 0; t < held.size(); ++t)
    EXPECT_EQ(std::memcmp(whole[t].buffers[0].data(), globals[t]->data(), globals[t]->size() * sizeof(T)), 0)
        << held[t].name;

  EXPECT_EQ(got.step, 12);
  EXPECT_EQ(got.world_size, 1);
  EXPECT_EQ(got.layout, meta.layout);
  EXPECT_EQ(got.config_ini, meta.config_ini);
  EXPECT_EQ(got.ints, meta.ints);
  EXPECT_EQ(got.reals, meta.reals);
  const CheckpointMeta only = read_checkpoint_meta(dir);
  EXPECT_EQ(only.step, 12);
  EXPECT_EQ(only.ints, meta.ints);
}

TEST_F(Checkpoint, RoundTripFloatIsBitwise) { round_trip<float>(dir(), comm_); }
TEST_F(Checkpoint, RoundTripDoubleIsBitwise) { round_trip<double>(dir(), comm_); }

TEST_F(Checkpoint, FloatCheckpointLoadsIntoDoubleAndBack) {
  const auto g = global_values<float>(300, 9);
  Held<float> f("w", 300, {{0, 300, 0}}, 300);
  f.fill([&](size_t, int64_t i) { return g[size_t(i)]; });
  save_checkpoint(dir(), sample_meta(1), std::vector<CheckpointTensor<float>>{f.view()}, comm_);

  Held<double> d("w", 300, {{0, 300, 0}}, 300);
  load_checkpoint(dir(), std::vector<CheckpointTensor<double>>{d.view()}, comm_);
  for (size_t i = 0; i < g.size(); ++i) {
    if (!std::isnan(g[i])) {
      ASSERT_EQ(d.buffers[0][i], double(g[i])) << i;
    }
  }

  // double -> file -> float: rounds to the nearest float.
  const std::string other = dir() + "/second";
  d.fill([&](size_t, int64_t i) { return 1.0 / 3.0 + double(i); });
  save_checkpoint(other, sample_meta(2), std::vector<CheckpointTensor<double>>{d.view()}, comm_);
  Held<float> back("w", 300, {{0, 300, 0}}, 300);
  load_checkpoint(other, std::vector<CheckpointTensor<float>>{back.view()}, comm_);
  for (int64_t i = 0; i < 300; ++i) ASSERT_EQ(back.buffers[0][size_t(i)], float(1.0 / 3.0 + double(i))) << i;
}

TEST_F(Checkpoint, ReplicatedAndOverlappingRunsLoadAnyCopy) {
  // Saved: [0, 60) and [40, 100) (elements 40..59 twice, each copy correct).
  Held<double> h("w", 100, {{0, 60, 0}, {40, 60, 60}}, 120);
  h.fill([](size_t a, int64_t i) { return double(a * 1000 + i); });
  save_checkpoint(dir(), sample_meta(5), std::vector<CheckpointTensor<double>>{h.view()}, comm_);
  // Loaded: the whole tensor, and [30, 70) a second time in the same buffers.
  Held<double> back("w", 100, {{0, 100, 0}, {30, 40, 100}}, 140);
  load_checkpoint(dir(), std::vector<CheckpointTensor<double>>{back.view()}, comm_);
  for (size_t a = 0; a < 3; ++a) {
    for (int64_t i = 0; i < 100; ++i) ASSERT_EQ(back.buffers[a][size_t(i)], double(a * 1000 + i));
    for (int64_t i = 0; i < 40; ++i) ASSERT_EQ(back.buffers[a][size_t(100 + i)], double(a * 1000 + 30 + i));
  }
}

TEST_F(Checkpoint, LoadsOnlyTheArraysAsked) {
  save_small(3);
  const auto v = load_whole(dir(), "layers.0.w", 100, {"adam_v"});
  for (int64_t i = 0; i < 100; ++i) ASSERT_EQ(v[size_t(i)], float(3000 + 200 + i));
}

// ---- refusals -----------------------------------------------------------------------

TEST_F(Checkpoint, MissingTensorNamesIt) {
  save_small(1);
  expect_error<IoError>([&] { load_whole(dir(), "layers.1.w", 100); }, {"'layers.1.w'", "not in the checkpoint"});
}

TEST_F(Checkpoint, WrongNumelNamesTensor) {
  save_small(1);
  expect_error<IoError>([&] { load_whole(dir(), "layers.0.w", 101); }, {"'layers.0.w'", "100 elements, expected 101"});
}

TEST_F(Checkpoint, MissingArrayNamesTensorAndArray) {
  save_small(1);
  expect_error<IoError>([&] { load_whole(dir(), "bias", 10, {"param", "momentum"}); }, {"'bias'", "'momentum'"});
}

TEST_F(Checkpoint, UncoveredElementNamesTensorAndRange) {
  Held<float> h("w", 100, {{0, 80, 0}}, 80);
  save_checkpoint(dir(), sample_meta(1), std::vector<CheckpointTensor<float>>{h.view()}, comm_);
  expect_error<IoError>([&] { load_whole(dir(), "w", 100); }, {"'w'", "[80, 100)", "in no rank file"});
  // The covered part alone loads.
  Held<float> part("w", 100, {{10, 70, 0}}, 70);
  EXPECT_NO_THROW(load_checkpoint(dir(), std::vector<CheckpointTensor<float>>{part.view()}, comm_));
}

TEST_F(Checkpoint, TruncatedRankFileNamesFile) {
  const std::string step_dir = save_small(1);
  const fs::path rank_file = fs::path(step_dir) / "rank-00000.h5";
  fs::resize_file(rank_file, fs::file_size(rank_file) / 2);
  expect_error<IoError>([&] { load_whole(dir(), "layers.0.w", 100); }, {"rank-00000.h5"});
  fs::resize_file(rank_file, 100);  // the superblock survives, nothing else
  expect_error<IoError>([&] { load_whole(dir(), "layers.0.w", 100); }, {"rank-00000.h5"});
}

TEST_F(Checkpoint, GarbageFilesNameTheFile) {
  const std::string step_dir = save_small(1);
  std::ofstream(fs::path(step_dir) / "rank-00000.h5", std::ios::trunc) << "not hdf5 at all\n";
  expect_error<IoError>([&] { load_whole(dir(), "bias", 10); }, {"rank-00000.h5", "not an HDF5 file"});
  std::ofstream(fs::path(step_dir) / "meta.h5", std::ios::trunc) << "garbage";
  expect_error<IoError>([&] { read_checkpoint_meta(dir()); }, {"meta.h5", "not an HDF5 file"});
  fs::remove(fs::path(step_dir) / "meta.h5");
  expect_error<IoError>([&] { load_whole(dir(), "bias", 10); }, {"latest", "step-00000001", "meta.h5"});
}

TEST_F(Checkpoint, MissingRankFileNamesFile) {
  const std::string step_dir = save_small(1);
  fs::remove(fs::path(step_dir) / "rank-00000.h5");
  expect_error<IoError>([&] { load_whole(dir(), "bias", 10); }, {"rank-00000.h5", "no such file"});
}

TEST_F(Checkpoint, UnknownFormatVersionIsRefused) {
  const std::string step_dir = save_small(1);
  const std::string path = (fs::path(step_dir) / "rank-00000.h5").string();
  {
    const hid_t f = H5Fopen(path.c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
    ASSERT_GE(f, 0);
    const hid_t a = H5Aopen(f, "format_version", H5P_DEFAULT);
    const int64_t v = 2;
    H5Awrite(a, H5T_NATIVE_INT64, &v);
    H5Aclose(a);
    H5Fclose(f);
  }
  expect_error<IoError>([&] { load_whole(dir(), "bias", 10); }, {"rank-00000.h5", "format_version 2 is not supported"});
}

TEST_F(Checkpoint, MissingLatestSaysWhatWasExpected) {
  expect_error<IoError>([&] { resolve_checkpoint(dir()); }, {dir(), "no such directory", "'latest'"});
  fs::create_directories(dir_);
  expect_error<IoError>([&] { load_whole(dir(), "w", 1); }, {dir(), "meta.h5", "'latest'"});
  std::ofstream(dir_ / "latest") << "step-00000009\n";
  expect_error<IoError>([&] { read_checkpoint_meta(dir()); }, {"latest", "'step-00000009'", "no meta.h5"});
}

TEST_F(Checkpoint, BadArgumentsAreRefusedBeforeWriting) {
  std::vector<Held<float>> held;
  held.emplace_back("w", 100, std::vector<CheckpointRun>{{0, 100, 0}}, 100);
  auto past_buffer = views(held);
  past_buffer[0].local_numel = 99;
  expect_error<InvalidArgument>([&] { save_checkpoint(dir(), sample_meta(1), past_buffer, comm_); },
                                {"'w'", "local_numel 99"});
  auto past_numel = views(held);
  past_numel[0].runs = {{50, 51, 0}};
  expect_error<InvalidArgument>([&] { save_checkpoint(dir(), sample_meta(1), past_numel, comm_); },
                                {"'w'", "global_numel 100"});
  auto twice = views(held);
  twice.push_back(twice[0]);
  expect_error<InvalidArgument>([&] { save_checkpoint(dir(), sample_meta(1), twice, comm_); }, {"'w'", "twice"});
  auto no_buffer = views(held);
  no_buffer[0].arrays[1].data = nullptr;
  expect_error<InvalidArgument>([&] { save_checkpoint(dir(), sample_meta(1), no_buffer, comm_); },
                                {"'w'", "'adam_m'", "no buffer"});
  EXPECT_FALSE(fs::exists(dir_));
  expect_error<InvalidArgument>([&] { load_checkpoint(dir(), past_buffer, comm_); }, {"'w'", "local_numel 99"});
}

// ---- publication ------------------------------------------------------------------

TEST_F(Checkpoint, FailedSavesLeaveThePreviousCheckpoint) {
  save_small(1);
  const auto before = entries(dir());
  const auto expect_untouched = [&] {
    EXPECT_EQ(entries(dir()), before);
    EXPECT_EQ(read_text(dir_ / "latest"), "step-00000001\n");
    EXPECT_EQ(load_whole(dir(), "bias", 10)[3], 1003.f);
  };

  // A contract breach: refused before anything is written.
  std::vector<Held<float>> held;
  held.emplace_back("bias", 10, std::vector<CheckpointRun>{{0, 10, 0}}, 10);
  auto bad = views(held);
  bad[0].local_numel = 5;
  EXPECT_THROW(save_checkpoint(dir(), sample_meta(2), bad, comm_), InvalidArgument);
  expect_untouched();

  // Disk full in the rank file, in meta.h5, in config.ini, in latest.
  for (const std::string victim : {"rank-00000.h5", "meta.h5", "config.ini", "latest.tmp"}) {
    detail::checkpoint_write_hook() = [&](const std::string& path) {
      if (fs::path(path).filename() == victim) throw IoError("No space left on device (injected)");
    };
    expect_error<IoError>([&] { save_checkpoint(dir(), sample_meta(2), views(held), comm_); },
                          {victim, "No space left on device (injected)"});
    detail::checkpoint_write_hook() = nullptr;
    expect_untouched();
  }

  // A checkpoint directory that cannot exist: under a regular file.
  std::ofstream(dir_ / "plain") << "x";
  expect_error<IoError>([&] { save_checkpoint((dir_ / "plain" / "ckpt").string(), sample_meta(2), views(held), comm_); },
                        {"plain/ckpt", "cannot create"});

  // Failing to replace an existing step restores it.
  detail::checkpoint_write_hook() = [&](const std::string& path) {
    if (fs::path(path).filename() == "latest.tmp") throw IoError("injected");
  };
  EXPECT_THROW(save_small(1), IoError);
  detail::checkpoint_write_hook() = nullptr;
  std::error_code ec;
  fs::remove(dir_ / "plain", ec);
  expect_untouched();
}

TEST_F(Checkpoint, SavingAStepAgainReplacesIt) {
  save_small(4);
  std::vector<Held<float>> held;
  held.emplace_back("bias", 10, std::vector<CheckpointRun>{{0, 10, 0}}, 10);
  held[0].fill([](size_t, int64_t i) { return float(-i); });
  save_checkpoint(dir(), sample_meta(4), views(held), comm_);
  EXPECT_EQ(entries(dir()), (std::vector<std::string>{"latest", "step-00000004"}));
  EXPECT_EQ(load_whole(dir(), "bias", 10)[7], -7.f);
  EXPECT_THROW(load_whole(dir(), "layers.0.w", 100), IoError);
}

TEST_F(Checkpoint, KeepRemovesOlderSteps) {
  for (int64_t step : {10, 20, 30}) save_small(step);
  save_small(40, 2);
  EXPECT_EQ(entries(dir()), (std::vector<std::string>{"latest", "step-00000030", "step-00000040"}));
  EXPECT_EQ(read_text(dir_ / "latest"), "step-00000040\n");
  save_small(50, 2);
  EXPECT_EQ(entries(dir()), (std::vector<std::string>{"latest", "step-00000040", "step-00000050"}));
  save_small(60, 1);
  EXPECT_EQ(entries(dir()), (std::vector<std::string>{"latest", "step-00000060"}));
  save_small(70);  // keep = 0: all
  EXPECT_EQ(entries(dir()), (std::vector<std::string>{"latest", "step-00000060", "step-00000070"}));
  EXPECT_EQ(load_whole(dir(), "layers.0.w", 100)[42], 70042.f);
  EXPECT_EQ(load_whole((dir_ / "step-00000060").string(), "layers.0.w", 100)[42], 60042.f);
}

// ---- configs ----------------------------------------------------------------------

TEST(CheckpointConfig, DifferencesListExactlyTheShapeKeys) {
  Config saved, now;
  EXPECT_TRUE(model_config_differences(saved, now).empty());
  now.model.dim = 256;
  now.model.position = PositionKind::Rope;
  now.moe.num_experts = 8;
  now.moe.activation = ActivationKind::SwiGLU;
  now.moe.every = 2;
  // Not shapes: routing and training knobs.
  now.moe.top_k = 1;
  now.moe.capacity_factor = 2.0;
  now.train.lr = 0.5;
  now.parallel.ep = 2;
  EXPECT_EQ(model_config_differences(saved, now),
            (std::vector<std::string>{"model.dim: 128 -> 256", "model.position: learned -> rope",
                                      "moe.num_experts: 4 -> 8", "moe.activation: gelu -> swiglu",
                                      "moe.every: 1 -> 2"}));
  Config routers = saved;
  routers.moe.router = RouterKind::NullExperts;
  routers.moe.num_null_experts = 2;
  routers.moe.num_shared_experts = 1;
  routers.moe.hidden_size = 64;
  EXPECT_EQ(model_config_differences(saved, routers),
            (std::vector<std::string>{"moe.hidden_size: 512 -> 64", "moe.router: topk -> null_experts",
                                      "moe.num_null_experts: 0 -> 2", "moe.num_shared_experts: 0 -> 1"}));
}

TEST(CheckpointConfig, SavedConfigParsesBack) {
  Config c;
  c.model.layers = 3;
  c.moe.top_k = 1;
  c.train.lr = 3e-4;
  CheckpointMeta meta;
  meta.config_ini = to_ini(c);
  EXPECT_EQ(to_ini(checkpoint_config(meta)), to_ini(c));
  meta.config_ini = "[model]\ndim = wide\n";
  expect_error<ConfigError>([&] { checkpoint_config(meta); }, {"checkpoint config", "model.dim"});
  meta.config_ini.clear();
  EXPECT_THROW(checkpoint_config(meta), IoError);
}

}  // namespace
}  // namespace sy::data
