// Checkpoints on the world of this run (1, 2 or 4 ranks): every rank holds a
// different sharding of a few tensors, saves, and loads with other
// decompositions of 1 to 7 parts (blocks, block-cyclic, reversed, replicated,
// overlapping), so a W-rank checkpoint is read as a 1-, 2-, 3-, ... way
// layout from within the same run: resharding means any decomposition loads.
// A failure on one rank only (I/O, arguments, a tensor it alone asks for)
// makes every rank throw the same one-line error and leaves the previous
// checkpoint and `latest` as they were.
//
// Values are tags: array a of tensor t holds value(t, a, i) at global index
// i, exact in float, so every element checks where it came from.
#include <gtest/gtest.h>
#include <mpi.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "core/error.hpp"
#include "data/checkpoint.hpp"
#include "tests/support/mpi_support.hpp"

namespace sy::data {
namespace {

namespace fs = std::filesystem;

struct TensorSpec {
  std::string name;
  int64_t numel;
};
// Fewer elements than ranks in one, a slash in another.
const std::vector<TensorSpec> kTensors = {
    {"layers.0.moe.experts.w1", 1000}, {"layers.0.norm.bias", 3}, {"embed/tokens", 999}};
const std::vector<std::string> kArrays = {"param", "adam_m", "adam_v"};

double value(size_t t, size_t a, int64_t i) { return double(t * 100000 + a * 10000) + double(i) + 0.25; }

enum class Split { Blocks, Cyclic, Reversed, Replicated, Overlapping };
const Split kSplits[] = {Split::Blocks, Split::Cyclic, Split::Reversed, Split::Replicated, Split::Overlapping};
const char* to_string(Split s) {
  switch (s) {
    case Split::Blocks: return "blocks";
    case Split::Cyclic: return "cyclic";
    case Split::Reversed: return "reversed";
    case Split::Replicated: return "replicated";
    case Split::Overlapping: return "overlapping";
  }
  return "?";
}

// The runs of part p of a `parts`-way split of [0, numel), local offsets packed in run order.
std::vector<CheckpointRun> split_runs(Split kind, int parts, int p, int64_t numel) {
  std::vector<std::pair<int64_t, int64_t>> spans;  // [begin, end)
  const auto block = [&](int q) { return std::make_pair(numel * q / parts, numel * (q + 1) / parts); };
  const auto cyclic = [&](int64_t size) {
    for (int64_t k = p; k * size < numel; k += parts) spans.emplace_back(k * size, std::min(numel, (k + 1) * size));
  };
  switch (kind) {
    case Split::Blocks: spans = {block(p)}; break;
    case Split::Cyclic: cyclic(37); break;
    case Split::Reversed:  // last block first: local order opposite to global order
      cyclic(53);
      std::reverse(spans.begin(), spans.end());
      break;
    case Split::Replicated: spans = {{0, numel}}; break;
    case Split::Overlapping: spans = {block((p + 1) % parts), block(p)}; break;  // every block on two parts
  }
  std::vector<CheckpointRun> runs;
  int64_t local = 0;
  for (const auto& [b, e] : spans) {
    if (e <= b) continue;
    runs.push_back({b, e - b, local});
    local += e - b;
  }
  return runs;
}

// One rank's part of every tensor, with its buffers.
template <typename T>
struct Holding {
  std::vector<std::vector<CheckpointRun>> runs;          // per tensor
  std::vector<std::vector<std::vector<T>>> buffers;      // per tensor, per array: (local_numel)

  Holding(Split kind, int parts, int p) {
    for (const TensorSpec& spec : kTensors) {
      runs.push_back(split_runs(kind, parts, p, spec.numel));
      int64_t local = 0;
      for (const CheckpointRun& r : runs.back()) local = std::max(local, r.local_offset + r.count);
      buffers.emplace_back(kArrays.size(), std::vector<T>(size_t(local), T(-1)));
    }
  }
  std::vector<CheckpointTensor<T>> view() {
    std::vector<CheckpointTensor<T>> v;
    for (size_t t = 0; t < kTensors.size(); ++t) {
      CheckpointTensor<T> tensor{kTensors[t].name, kTensors[t].numel, runs[t], {}, int64_t(buffers[t][0].size())};
      for (size_t a = 0; a < kArrays.size(); ++a) tensor.arrays.push_back({kArrays[a], buffers[t][a].data()});
      v.push_back(std::move(tensor));
    }
    return v;
  }
  void fill() {
    for (size_t t = 0; t < kTensors.size(); ++t)
      for (const CheckpointRun& r : runs[t])
        for (size_t a = 0; a < kArrays.size(); ++a)
          for (int64_t i = 0; i < r.count; ++i)
            buffers[t][a][size_t(r.local_offset + i)] = T(value(t, a, r.global_begin + i));
  }
  // Number of wrong elements (expects every one to be value(t, a, i)).
  int64_t wrong() const {
    int64_t bad = 0;
    for (size_t t = 0; t < kTensors.size(); ++t)
      for (const CheckpointRun& r : runs[t])
        for (size_t a = 0; a < kArrays.size(); ++a)
          for (int64_t i = 0; i < r.count; ++i)
            bad += buffers[t][a][size_t(r.local_offset + i)] != T(value(t, a, r.global_begin + i));
    return bad;
  }
};

CheckpointMeta meta_at(int64_t step, int world) {
  CheckpointMeta meta;
  meta.step = step;
  meta.layout = "dp=" + std::to_string(world) + " ep=1 tp=1";
  meta.config_ini = "[model]\ndim = 64\n";
  meta.ints = {{"sampler.position", 4096 + step}};
  meta.reals = {{"lr", 1e-3}};
  return meta;
}

std::string rank_file(int rank) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "rank-%05d.h5", rank);
  return buf;
}

std::vector<std::string> entries(const fs::path& dir) {
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(dir)) names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  return names;
}

std::string read_text(const fs::path& path) {
  std::ifstream in(path);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

// Expects fn to throw E on this rank with every one of parts in its one-line message.
template <typename E, typename Fn>
void expect_error(Fn fn, const std::vector<std::string>& parts) {
  try {
    fn();
    ADD_FAILURE() << "no exception; expected one naming " << testing::PrintToString(parts);
  } catch (const E& e) {
    const std::string what = e.what();
    EXPECT_EQ(what.find('\n'), std::string::npos) << what;
    for (const std::string& p : parts) EXPECT_NE(what.find(p), std::string::npos) << "'" << p << "' not in: " << what;
  }
}

// A fresh directory shared by every rank (named after rank 0's pid and the test).
class CheckpointMpi : public testing::Test {
 protected:
  void SetUp() override {
    comm_ = test::world_communicator();
    W_ = comm_->size();
    r_ = comm_->rank();
    int64_t pid = ::getpid();
    comm_->broadcast(&pid, 1, par::ElemType::I64, 0);
    dir_ = fs::temp_directory_path() / ("sy_ckpt_mpi_" + std::to_string(pid) + "_" +
                                        testing::UnitTest::GetInstance()->current_test_info()->name());
    if (r_ == 0) fs::remove_all(dir_);
    comm_->barrier();
  }
  void TearDown() override {
    detail::checkpoint_write_hook() = nullptr;
    comm_->barrier();
    std::error_code ec;
    if (r_ == 0) fs::remove_all(dir_, ec);
  }
  std::string dir() const { return dir_.string(); }

  // Every rank loads part (r + q) % parts for each q: all parts get loaded. Returns the wrong elements on this rank.
  template <typename T>
  int64_t load_every_part(const std::string& path, Split kind, int parts, int64_t expect_step) {
    int64_t bad = 0;
    for (int q = 0; q < parts; ++q) {
      Holding<T> h(kind, parts, (r_ + q) % parts);
      const CheckpointMeta meta = load_checkpoint(path, h.view(), *comm_);
      EXPECT_EQ(meta.step, expect_step);
      bad += h.wrong();
    }
    return bad;
  }

  std::unique_ptr<par::MpiCommunicator> comm_;
  int W_ = 1, r_ = 0;
  fs::path dir_;
};

template <typename T>
class CheckpointMpiTyped : public CheckpointMpi {};
using Types = testing::Types<float, double>;
TYPED_TEST_SUITE(CheckpointMpiTyped, Types);

TYPED_TEST(CheckpointMpiTyped, AnyDecompositionLoadsAWorldSizedCheckpoint) {
  using T = TypeParam;
  Holding<T> mine(Split::Cyclic, this->W_, this->r_);
  mine.fill();
  const std::string step_dir = save_checkpoint(this->dir(), meta_at(7, this->W_), mine.view(), *this->comm_);
  EXPECT_EQ(step_dir, (this->dir_ / "step-00000007").string());
  std::vector<std::string> expected = {"config.ini", "meta.h5"};
  for (int r = 0; r < this->W_; ++r) expected.push_back(rank_file(r));
  EXPECT_EQ(entries(step_dir), expected);

  const CheckpointMeta meta = read_checkpoint_meta(this->dir());
  EXPECT_EQ(meta.world_size, this->W_);
  EXPECT_EQ(meta.layout, meta_at(7, this->W_).layout);
  EXPECT_EQ(meta.ints.at("sampler.position"), 4096 + 7);

  for (Split kind : kSplits)
    for (int parts : {1, 2, 3, 4, 7})
      EXPECT_EQ((this->template load_every_part<T>(this->dir(), kind, parts, 7)), 0)
          << "loading as " << parts << "-way " << to_string(kind) << " on rank " << this->r_;
  // The other precision reads the same file.
  if constexpr (std::is_same_v<T, float>) {
    EXPECT_EQ(this->template load_every_part<double>(step_dir, Split::Blocks, 3, 7), 0);
  } else {
    EXPECT_EQ(this->template load_every_part<float>(step_dir, Split::Blocks, 3, 7), 0);
  }
}

// W -> 2 -> 1 -> W: each loaded layout saved again (with replicas when W > 2) and read by the next.
TEST_F(CheckpointMpi, ReshardedCheckpointsChain) {
  Holding<float> first(Split::Blocks, W_, r_);
  first.fill();
  save_checkpoint(dir(), meta_at(1, W_), first.view(), *comm_);

  Holding<float> two(W_ == 1 ? Split::Replicated : Split::Blocks, 2, r_ % 2);  // one rank must hold it all
  load_checkpoint(dir(), two.view(), *comm_);
  EXPECT_EQ(two.wrong(), 0);
  save_checkpoint(dir(), meta_at(2, W_), two.view(), *comm_);

  Holding<float> one(Split::Reversed, 1, 0);
  EXPECT_EQ(load_checkpoint(dir(), one.view(), *comm_).step, 2);
  EXPECT_EQ(one.wrong(), 0);
  save_checkpoint(dir(), meta_at(3, W_), one.view(), *comm_, /*keep=*/2);
  EXPECT_EQ(entries(dir_), (std::vector<std::string>{"latest", "step-00000002", "step-00000003"}));

  EXPECT_EQ(load_every_part<float>(dir(), Split::Overlapping, W_, 3), 0);
  EXPECT_EQ(load_every_part<float>((dir_ / "step-00000002").string(), Split::Cyclic, W_ + 1, 2), 0);
}

TEST_F(CheckpointMpi, FailureOnOneRankFailsEveryRankAndKeepsThePreviousCheckpoint) {
  const int last = W_ - 1;
  Holding<float> mine(Split::Cyclic, W_, r_);
  mine.fill();
  save_checkpoint(dir(), meta_at(1, W_), mine.view(), *comm_);
  const auto before = entries(dir_);
  const auto expect_untouched = [&] {
    comm_->barrier();
    EXPECT_EQ(entries(dir_), before);
    EXPECT_EQ(read_text(dir_ / "latest"), "step-00000001\n");
    EXPECT_EQ(load_every_part<float>(dir(), Split::Blocks, W_, 1), 0);
  };

  // Disk full on the last rank only, while writing its rank file.
  detail::checkpoint_write_hook() = [&](const std::string& path) {
    if (r_ == last && fs::path(path).filename() == rank_file(last)) throw IoError("No space left on device (injected)");
  };
  expect_error<IoError>([&] { save_checkpoint(dir(), meta_at(2, W_), mine.view(), *comm_); },
                        {rank_file(last), "No space left on device (injected)"});
  expect_untouched();

  // Rank 0 fails to write latest after the step directory is in place.
  detail::checkpoint_write_hook() = [&](const std::string& path) {
    if (fs::path(path).filename() == "latest.tmp") throw IoError("injected");
  };
  expect_error<IoError>([&] { save_checkpoint(dir(), meta_at(2, W_), mine.view(), *comm_); }, {"latest.tmp", "injected"});
  detail::checkpoint_write_hook() = nullptr;
  expect_untouched();

  // A run past its buffer on the last rank: refused everywhere before writing.
  {
    auto view = mine.view();
    if (r_ == last) view[0].local_numel = 1;
    std::vector<std::string> parts = {"'" + kTensors[0].name + "'", "local_numel 1"};
    if (W_ > 1) parts.push_back("rank " + std::to_string(last) + " of " + std::to_string(W_));
    expect_error<InvalidArgument>([&] { save_checkpoint(dir(), meta_at(2, W_), view, *comm_); }, parts);
  }
  expect_untouched();

  // A load that fails on the last rank only (it alone asks for a wrong size).
  {
    Holding<float> h(Split::Blocks, W_, r_);
    auto view = h.view();
    std::vector<std::vector<float>> spare(kArrays.size(), std::vector<float>(3));
    if (r_ == last) {
      view[1].global_numel = 4;
      view[1].runs = {{0, 3, 0}};
      view[1].local_numel = 3;
      for (size_t a = 0; a < kArrays.size(); ++a) view[1].arrays[a].data = spare[a].data();
    }
    expect_error<IoError>([&] { load_checkpoint(dir(), view, *comm_); }, {"'" + kTensors[1].name + "'", "expected 4"});
  }
}

TEST_F(CheckpointMpi, RanksMustAgreeOnTheStep) {
  if (W_ == 1) GTEST_SKIP() << "needs two ranks";
  Holding<double> mine(Split::Blocks, W_, r_);
  mine.fill();
  expect_error<InvalidArgument>([&] { save_checkpoint(dir(), meta_at(r_ == 1 ? 6 : 5, W_), mine.view(), *comm_); },
                                {"same dir and meta.step"});
  EXPECT_FALSE(fs::exists(dir_ / "latest"));
}

}  // namespace
}  // namespace sy::data
