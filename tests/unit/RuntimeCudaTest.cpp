//===- RuntimeCudaTest.cpp - CUDA driver loading and the CudaRouter -------===//
//
// Three groups:
//   RuntimeCudaDriverTest  the real libcuda.so.1: loads on GPU machines, and
//                          elsewhere fails with the "no CUDA driver" line.
//   RuntimeCudaRouterTest  the CudaRouter on libmoegen-fake-cuda.so, a
//                          stand-in driver that records launches: binary and
//                          arch selection, host-side argument checks,
//                          parameter packing, grids, error records. Runs on
//                          every machine.
//   RuntimeGpuTest         labelled GPU tests: real kernels from the
//                          directory in $MOEGEN_TEST_KERNEL_DIR (a `moegen
//                          compile --emit=cubin -o DIR` output) on a real
//                          device; skipped with the reason otherwise.
//
//===----------------------------------------------------------------------===//

#include "runtime/Error.h"
#include "abi/KernelError.h"
#include "runtime/cuda/CudaDriver.h"
#include "runtime/cuda/CudaRouter.h"
#include "tests/unit/RuntimeFakeCuda.h"
#include "tests/unit/RuntimeTestUtil.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <dlfcn.h>
#include <random>
#include <set>
#include <tuple>

using namespace moegen;
using namespace moegen::rt;
using nlohmann::json;
using rttest::TempDir;

namespace {

template <typename F> std::pair<Error::Kind, std::string> errorOf(F &&f) {
  try {
    f();
  } catch (const Error &e) {
    return {e.kind(), e.what()};
  }
  return {Error::Kind::Io, "<no error>"};
}

//===----------------------------------------------------------------------===//
// The real driver
//===----------------------------------------------------------------------===//

TEST(RuntimeCudaDriverTest, RealDriverLoadsOrSaysNoDriver) {
  void *probe = ::dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
  if (probe) {
    ::dlclose(probe);
    try {
      const CudaDriver &driver = CudaDriver::get();
      EXPECT_GE(driver.version(), 11030);
      EXPECT_GE(driver.deviceCount(), 1);
    } catch (const Error &e) {
      // A driver without a usable device (e.g. a container without GPUs).
      EXPECT_TRUE(e.kind() == Error::Kind::NoDevice ||
                  e.kind() == Error::Kind::Driver)
          << e.what();
    }
    return;
  }
  for (int attempt = 0; attempt < 2; ++attempt) { // the failure is cached
    auto [kind, message] = errorOf([] { CudaDriver::get(); });
    EXPECT_EQ(kind, Error::Kind::NoDriver);
    EXPECT_EQ(message.rfind("no CUDA driver: dlopen(libcuda.so.1) failed: ", 0),
              0u)
        << message;
    EXPECT_EQ(message.find('\n'), std::string::npos);
  }
  // And a router cannot be made, with the same error.
  TempDir dir;
  rttest::writeKernelDir(dir.path(), rttest::exampleManifest());
  auto [kind, message] = errorOf([&] { CudaRouter::load(dir.path()); });
  EXPECT_EQ(kind, Error::Kind::NoDriver);
  EXPECT_EQ(message.rfind("no CUDA driver: ", 0), 0u) << message;
}

TEST(RuntimeCudaDriverTest, MissingLibrary) {
  auto [kind, message] =
      errorOf([] { CudaDriver::open("libmoegen-no-such-driver.so.1"); });
  EXPECT_EQ(kind, Error::Kind::NoDriver);
  EXPECT_EQ(message, "no CUDA driver: dlopen(libmoegen-no-such-driver.so.1) "
                     "failed: libmoegen-no-such-driver.so.1: cannot open "
                     "shared object file: No such file or directory");
}

TEST(RuntimeCudaDriverTest, LibraryWithoutGetProcAddress) {
  // libm is a real shared library, but no CUDA driver.
  auto [kind, message] = errorOf([] { CudaDriver::open("libm.so.6"); });
  EXPECT_EQ(kind, Error::Kind::NoDriver);
  EXPECT_EQ(message, "no CUDA driver: libm.so.6 has no cuGetProcAddress (a "
                     "driver for CUDA 11.3 or newer is needed)");
}

//===----------------------------------------------------------------------===//
// The fake driver
//===----------------------------------------------------------------------===//

FakeCudaState &fake() {
  static FakeCudaState *state = [] {
    void *handle = ::dlopen(MOEGEN_FAKE_CUDA_PATH, RTLD_NOW | RTLD_LOCAL);
    if (!handle)
      std::abort();
    auto get = reinterpret_cast<FakeCudaState *(*)()>(
        ::dlsym(handle, "moegenFakeCudaState"));
    return get();
  }();
  return *state;
}

CUcontext fakeContext(const char *which) {
  void *handle = ::dlopen(MOEGEN_FAKE_CUDA_PATH, RTLD_NOW | RTLD_LOCAL);
  auto get = reinterpret_cast<CUcontext (*)()>(::dlsym(handle, which));
  return get();
}

TEST(RuntimeFakeDriverTest, NoDeviceAndInitFailure) {
  fake().reset();
  fake().initResult = CUDA_ERROR_NO_DEVICE;
  auto [kind, message] =
      errorOf([] { CudaDriver::open(MOEGEN_FAKE_CUDA_PATH); });
  EXPECT_EQ(kind, Error::Kind::NoDevice);
  EXPECT_EQ(message, "no CUDA device: cuInit: CUDA_ERROR_NO_DEVICE (no "
                     "CUDA-capable device is detected)");

  fake().reset();
  fake().deviceCount = 0;
  std::tie(kind, message) =
      errorOf([] { CudaDriver::open(MOEGEN_FAKE_CUDA_PATH); });
  EXPECT_EQ(kind, Error::Kind::NoDevice);
  EXPECT_EQ(message, "no CUDA device: the driver (CUDA 12.4) sees no device");

  fake().reset();
  fake().driverVersion = 11020;
  std::tie(kind, message) =
      errorOf([] { CudaDriver::open(MOEGEN_FAKE_CUDA_PATH); });
  EXPECT_EQ(kind, Error::Kind::NoDriver);
  EXPECT_EQ(message, std::string("no CUDA driver: ") + MOEGEN_FAKE_CUDA_PATH +
                         " is version 11.2; a driver for CUDA 11.3 or newer "
                         "is needed");
  fake().reset();
}

class RuntimeCudaRouterTest : public ::testing::Test {
protected:
  void SetUp() override {
    fake().reset();
    driver = CudaDriver::open(MOEGEN_FAKE_CUDA_PATH);
    options.driver = driver.get();
  }
  void TearDown() override { fake().reset(); }

  std::unique_ptr<CudaRouter> load(const json &manifest) {
    rttest::writeKernelDir(dir.path(), manifest);
    return CudaRouter::load(dir.path(), options);
  }
  std::pair<Error::Kind, std::string> loadError(const json &manifest) {
    return errorOf([&] { load(manifest); });
  }

  /// Device tensors for a route call of `tokens` tokens (E 256, k 8).
  struct Tensors {
    DeviceBuffer logits, bias, capture, ids, weights, counts, offsets, slots,
        positions, error;
  };
  Tensors allocate(const CudaRouter &router, int64_t tokens, int64_t layers) {
    Tensors t;
    auto bytes = [](int64_t n) { return size_t(std::max<int64_t>(n, 1)); };
    t.logits = router.allocate(bytes(tokens * 256 * 4));
    t.bias = router.allocate(256 * 4);
    t.capture = router.allocate(bytes(tokens * layers * 8 * 2));
    t.ids = router.allocate(bytes(tokens * 8 * 4));
    t.weights = router.allocate(bytes(tokens * 8 * 4));
    t.counts = router.allocate(256 * 4);
    t.offsets = router.allocate(257 * 4);
    t.slots = router.allocate(bytes(tokens * 8 * 4));
    t.positions = router.allocate(bytes(tokens * 8 * 4));
    t.error = router.allocate(48);
    return t;
  }
  static RouteInputs inputs(const Tensors &t, int64_t tokens, int64_t layers,
                            int64_t layer) {
    RouteInputs in;
    in.numTokens = tokens;
    in.logits = t.logits.get();
    in.bias = t.bias.get();
    in.capture = t.capture.get();
    in.captureLayers = layers;
    in.captureLayer = layer;
    return in;
  }
  static RouteOutputs outputs(const Tensors &t, bool dispatch) {
    RouteOutputs out;
    out.topkIds = t.ids.get();
    out.topkWeights = t.weights.get();
    if (dispatch) {
      out.expertCounts = t.counts.get();
      out.expertOffsets = t.offsets.get();
      out.sortedSlots = t.slots.get();
      out.slotPositions = t.positions.get();
    }
    out.error = t.error.get();
    return out;
  }

  std::unique_ptr<CudaDriver> driver;
  LoadOptions options;
  TempDir dir;
};

TEST_F(RuntimeCudaRouterTest, LoadsCubinIntoThePrimaryContext) {
  auto router = load(rttest::exampleManifest());
  EXPECT_STREQ(router->loadedBinaryKind(), "cubin");
  EXPECT_EQ(router->deviceMajor(), 9);
  EXPECT_EQ(router->deviceMinor(), 0);
  EXPECT_EQ(router->context(), fakeContext("moegenFakeCudaPrimaryContext"));
  EXPECT_EQ(fake().primaryRetains, 1);
  EXPECT_TRUE(fake().contextStack.empty()); // pushed and popped
  EXPECT_TRUE(router->hasEntry(EntryKind::Route));
  EXPECT_TRUE(router->hasEntry(EntryKind::Dispatch));
  EXPECT_FALSE(router->hasEntry(EntryKind::Replay));
  EXPECT_EQ(router->manifest().numExperts, 256);
  // 12 KiB of dynamic shared memory needs no opt-in.
  EXPECT_TRUE(fake().dynamicSharedOptIn.empty());
  router.reset();
  EXPECT_EQ(fake().unloads, 1);
  EXPECT_EQ(fake().primaryReleases, 1);
  EXPECT_TRUE(fake().allocations.empty()); // the router's error record too
}

TEST_F(RuntimeCudaRouterTest, UsesTheCurrentContext) {
  CUcontext other = fakeContext("moegenFakeCudaOtherContext");
  fake().contextStack.push_back(other);
  auto router = load(rttest::exampleManifest());
  EXPECT_EQ(router->context(), other);
  EXPECT_EQ(fake().primaryRetains, 0);
  EXPECT_EQ(fake().contextStack, std::vector<CUcontext>{other});
}

TEST_F(RuntimeCudaRouterTest, ArchSelection) {
  json m = rttest::exampleManifest();
  // sm_80 cubin on a 9.0 device: the PTX is JIT-compiled.
  m["arch"] = "sm_80";
  {
    auto router = load(m);
    EXPECT_STREQ(router->loadedBinaryKind(), "ptx");
    EXPECT_EQ(fake().cubinLoads, 0);
    EXPECT_EQ(fake().ptxLoads, 1);
  }
  // preferPtx skips a matching cubin.
  m["arch"] = "sm_90";
  options.preferPtx = true;
  EXPECT_STREQ(load(m)->loadedBinaryKind(), "ptx");
  options.preferPtx = false;
  // sm_90a runs on 9.0 as a cubin.
  m["arch"] = "sm_90a";
  EXPECT_STREQ(load(m)->loadedBinaryKind(), "cubin");

  const std::string path = dir / "manifest.json";
  // A cubin for another arch and no PTX.
  m["arch"] = "sm_90";
  m.erase("ptx");
  std::filesystem::remove(dir / "kernels.ptx");
  fake().ccMajor = 8;
  auto [kind, message] = loadError(m);
  EXPECT_EQ(kind, Error::Kind::Arch);
  EXPECT_EQ(message, path + ": arch: the kernels are for sm_90, but the "
                            "device is Fake GPU, sm_80 (compute capability "
                            "8.0): the cubin runs only on compute capability "
                            "9.x with x >= 0, and the manifest has no PTX for "
                            "the driver to JIT-compile (recompile with --arch "
                            "sm_80)");
  // PTX only, for a newer arch than the device.
  m.erase("cubin");
  m["ptx"] = "kernels.ptx";
  std::tie(kind, message) = loadError(m);
  EXPECT_EQ(kind, Error::Kind::Arch);
  EXPECT_EQ(message, path + ": arch: the kernels are for sm_90, but the "
                            "device is Fake GPU, sm_80 (compute capability "
                            "8.0): PTX for sm_90 JIT-compiles only for the "
                            "same or a newer compute capability (recompile "
                            "with --arch sm_80)");
  // sm_90a with both binaries on a 10.0 device.
  fake().ccMajor = 10;
  m["cubin"] = "kernels.cubin";
  m["arch"] = "sm_90a";
  std::tie(kind, message) = loadError(m);
  EXPECT_EQ(kind, Error::Kind::Arch);
  EXPECT_EQ(message, path + ": arch: the kernels are for sm_90a, but the "
                            "device is Fake GPU, sm_100 (compute capability "
                            "10.0): neither the cubin nor the PTX for sm_90a "
                            "runs on it (recompile with --arch sm_100)");
}

TEST_F(RuntimeCudaRouterTest, CubinRejectedByTheDriverFallsBackToPtx) {
  json m = rttest::exampleManifest();
  rttest::writeKernelDir(dir.path(), m);
  rttest::writeText(dir / "kernels.cubin", "not a cubin");
  auto router = CudaRouter::load(dir.path(), options);
  EXPECT_STREQ(router->loadedBinaryKind(), "ptx");
  // Without PTX the driver's error is reported with the file.
  m.erase("ptx");
  std::filesystem::remove(dir / "kernels.ptx");
  rttest::writeText(dir / "manifest.json", m.dump());
  auto [kind, message] =
      errorOf([&] { CudaRouter::load(dir.path(), options); });
  EXPECT_EQ(kind, Error::Kind::Driver);
  EXPECT_EQ(message, dir / "kernels.cubin" +
                         ": cuModuleLoadData: CUDA_ERROR_INVALID_IMAGE (fake "
                         "error)");
}

TEST_F(RuntimeCudaRouterTest, HugeBinaryIsNotRead) {
  // A (sparse) 2 GiB cubin is refused from its size, not read into memory.
  rttest::writeKernelDir(dir.path(), rttest::exampleManifest());
  std::filesystem::resize_file(dir / "kernels.cubin", uintmax_t(2) << 30);
  auto [kind, message] =
      errorOf([&] { CudaRouter::load(dir.path(), options); });
  EXPECT_EQ(kind, Error::Kind::Io);
  EXPECT_EQ(message, dir / "kernels.cubin" +
                         ": cannot read the cubin: it is larger than 1 GiB");
}

TEST_F(RuntimeCudaRouterTest, SymbolMissingFromTheBinary) {
  json m = rttest::exampleManifest();
  rttest::writeKernelDir(dir.path(), m);
  rttest::writeText(dir / "kernels.cubin", "FAKE-CUBIN sm_90\nroute 12\n");
  auto [kind, message] =
      errorOf([&] { CudaRouter::load(dir.path(), options); });
  EXPECT_EQ(kind, Error::Kind::Manifest);
  EXPECT_EQ(message, dir / "manifest.json" +
                         ": kernels[1].symbol: 'dispatch' is not in " +
                         dir / "kernels.cubin" +
                         " (cuModuleGetFunction: CUDA_ERROR_NOT_FOUND (fake "
                         "error))");
}

TEST_F(RuntimeCudaRouterTest, LargeSharedMemoryOptIn) {
  json m = rttest::exampleManifest();
  m["kernels"][0]["launch"]["dynamic_shared_memory_bytes"] = 100000;
  auto router = load(m);
  EXPECT_EQ(fake().dynamicSharedOptIn["route"], 100000);
  router.reset();
  m["kernels"][0]["launch"]["dynamic_shared_memory_bytes"] = 300000;
  auto [kind, message] = loadError(m);
  EXPECT_EQ(kind, Error::Kind::Arch);
  EXPECT_EQ(message, dir / "manifest.json" +
                         ": kernels[0].launch.dynamic_shared_memory_bytes: "
                         "300000 bytes, but the device allows at most 232448 "
                         "per block (CUDA_ERROR_INVALID_VALUE (invalid "
                         "argument))");
}

TEST_F(RuntimeCudaRouterTest, CooperativeDispatchNeedsEveryBlockResident) {
  // At most one block per SM: a device of 2 SMs gets a grid of 2.
  fake().multiprocessors = 2;
  auto router = load(rttest::exampleManifest());
  Tensors t = allocate(*router, 1000, 3);
  fake().launches.clear();
  router->dispatch(t.ids.get(), 1000, outputs(t, true), nullptr);
  ASSERT_EQ(fake().launches.size(), 1u);
  EXPECT_TRUE(fake().launches[0].cooperative);
  EXPECT_EQ(fake().launches[0].grid, 2u);
  router.reset();

  // A device without cooperative launches cannot run the dispatch kernel.
  fake().cooperativeLaunch = 0;
  auto [kind, message] = loadError(rttest::exampleManifest());
  EXPECT_EQ(kind, Error::Kind::Arch);
  EXPECT_EQ(message, dir.path() + "/manifest.json" +
                         ": kernels[1].launch.grid_dim: the device does not "
                         "support cooperative launches");
}

TEST_F(RuntimeCudaRouterTest, RouteAndDispatchLaunches) {
  auto router = load(rttest::exampleManifest());
  Tensors t = allocate(*router, 10, 3);
  CUstream stream = nullptr;
  fake().contextStack.push_back(router->context());
  driver->check(driver->streamCreate(&stream, 0), "cuStreamCreate");
  fake().contextStack.clear();
  fake().events.clear();

  router->route(inputs(t, 10, 3, 2), outputs(t, true), stream);
  ASSERT_EQ(fake().launches.size(), 2u);
  EXPECT_EQ(fake().events,
            (std::vector<std::string>{"route", "dispatch"}));
  const FakeCudaLaunch &route = fake().launches[0];
  EXPECT_EQ(route.symbol, "route");
  EXPECT_EQ(route.grid, 3u); // ceil(10 / 4)
  EXPECT_EQ(route.block, 128u);
  EXPECT_EQ(route.sharedBytes, 12288u);
  EXPECT_EQ(route.stream, stream);
  EXPECT_EQ(route.params,
            (std::vector<uint64_t>{t.logits.get(), 10, t.bias.get(),
                                   t.capture.get(), 10, 3, 2, t.ids.get(), 10,
                                   t.weights.get(), 10, t.error.get()}));
  const FakeCudaLaunch &dispatch = fake().launches[1];
  // Cooperative: 80 slots fit one block; the scratch is the router's own,
  // allocated at load to the ABI's size.
  EXPECT_TRUE(dispatch.cooperative);
  EXPECT_FALSE(route.cooperative);
  EXPECT_EQ(dispatch.grid, 1u);
  EXPECT_EQ(dispatch.block, 256u);
  ASSERT_EQ(dispatch.params.size(), 10u);
  EXPECT_EQ(fake().allocations.at(CUdeviceptr(dispatch.params[9])),
            size_t(moegen::abi::dispatchScratchWords(256)) * 4);
  EXPECT_EQ(dispatch.params,
            (std::vector<uint64_t>{t.ids.get(), 10, t.counts.get(),
                                   t.offsets.get(), t.slots.get(), 80,
                                   t.positions.get(), 80, t.error.get(),
                                   dispatch.params[9]}));
  EXPECT_TRUE(fake().contextStack.empty());

  // T = 0: no route launch; dispatch still runs (it zeroes the counts).
  fake().launches.clear();
  fake().events.clear();
  router->route(inputs(t, 0, 3, 0), outputs(t, true), stream);
  EXPECT_EQ(fake().events, (std::vector<std::string>{"dispatch"}));

  // Dispatch alone.
  fake().launches.clear();
  router->dispatch(t.ids.get(), 7, outputs(t, true), stream);
  ASSERT_EQ(fake().launches.size(), 1u);
  EXPECT_EQ(fake().launches[0].params[1], 7u);
  EXPECT_EQ(fake().launches[0].params[5], 56u);

  // The grid: one block per 2048 slots, at most one per SM.
  Tensors many = allocate(*router, 1000, 3);
  fake().launches.clear();
  router->dispatch(many.ids.get(), 1000, outputs(many, true), stream);
  ASSERT_EQ(fake().launches.size(), 1u);
  EXPECT_EQ(fake().launches[0].grid, 4u); // ceil(8000 / 2048)
  fake().launches.clear();
  router->dispatch(many.ids.get(), 0, outputs(many, true), stream);
  EXPECT_EQ(fake().launches.at(0).grid, 1u); // T = 0 still writes counts
  driver->streamDestroy(stream);
}

// A kernel per token bucket: a call of T tokens launches the route kernel
// with the largest min_tokens <= T, on its own launch rule.
TEST_F(RuntimeCudaRouterTest, TokenBucketsPickTheirKernel) {
  json manifest = rttest::exampleManifest();
  json big = manifest["kernels"][0];
  big["symbol"] = "route_t64";
  big["min_tokens"] = 64;
  big["launch"]["block_dim"] = 256;
  big["launch"]["tokens_per_block"] = 32;
  big["launch"]["grid_dim"] = "ceil_div(T, 32)";
  big["launch"]["lanes_per_token"] = 8;
  json huge = big;
  huge["symbol"] = "route_t4096";
  huge["min_tokens"] = 4096;
  // Listed out of order: the runtime picks by min_tokens, not position.
  manifest["kernels"].push_back(huge);
  manifest["kernels"].push_back(big);
  auto router = load(manifest);
  EXPECT_EQ(router->manifest().find(EntryKind::Route)->symbol, "route");
  Tensors t = allocate(*router, 5000, 3);
  for (auto [tokens, symbol, grid] :
       {std::tuple<int64_t, const char *, unsigned>{1, "route", 1},
        {63, "route", 16},
        {64, "route_t64", 2},
        {4095, "route_t64", 128},
        {4096, "route_t4096", 128},
        {5000, "route_t4096", 157}}) {
    fake().launches.clear();
    router->route(inputs(t, tokens, 3, 0), outputs(t, false), nullptr);
    ASSERT_EQ(fake().launches.size(), 1u) << tokens;
    EXPECT_EQ(fake().launches[0].symbol, symbol) << tokens;
    EXPECT_EQ(fake().launches[0].grid, grid) << tokens;
  }
}

TEST_F(RuntimeCudaRouterTest, TokenBucketsAreChecked) {
  json manifest = rttest::exampleManifest();
  json twin = manifest["kernels"][0];
  twin["symbol"] = "route_t64";
  twin["min_tokens"] = 64;
  json same = manifest;
  same["kernels"].push_back(twin);
  same["kernels"].push_back(twin);
  same["kernels"].back()["symbol"] = "route_again";
  EXPECT_EQ(loadError(same).second,
            dir.path() + "/manifest.json: kernels[3].entry: 'route' appears "
                         "twice (also kernels[2]) with min_tokens 64");
  json params = manifest;
  params["kernels"].push_back(twin);
  params["kernels"].back()["params"].erase(2); // the bias
  EXPECT_NE(loadError(params).second.find(
                "kernels[2].params: differ from those of the route kernel "
                "for fewer tokens"),
            std::string::npos);
  json dispatch = manifest;
  dispatch["kernels"][1]["min_tokens"] = 64;
  EXPECT_NE(loadError(dispatch).second.find(
                "kernels[1].min_tokens: only route, route_hash and replay "
                "have a kernel per token bucket"),
            std::string::npos);
  json zero = manifest;
  zero["kernels"].push_back(twin);
  zero["kernels"].back()["min_tokens"] = 0;
  EXPECT_NE(loadError(zero).second.find("kernels[2].min_tokens"),
            std::string::npos);
  json orphan = manifest;
  orphan["kernels"][0]["min_tokens"] = 64;
  EXPECT_NE(loadError(orphan).second.find(
                "kernels[0].min_tokens: the route entry point has no kernel "
                "without min_tokens"),
            std::string::npos);
}

TEST_F(RuntimeCudaRouterTest, LibraryAllocatedBuffers) {
  auto router = load(rttest::exampleManifest());
  RouteBuffers buffers = router->allocateBuffers(16);
  EXPECT_EQ(buffers.maxTokens(), 16);
  RouteOutputs out = buffers.outputs();
  EXPECT_NE(out.topkIds, 0u);
  EXPECT_NE(out.expertOffsets, 0u);
  EXPECT_NE(out.error, 0u);
  EXPECT_EQ(fake().allocations.at(out.expertOffsets), 257u * 4);
  EXPECT_EQ(fake().allocations.at(out.sortedSlots), 16u * 8 * 4);
  Tensors t = allocate(*router, 16, 2);
  fake().contextStack.push_back(router->context()); // stream 0 -> current
  fake().launches.clear();
  RouteOutputs written = router->route(inputs(t, 16, 2, 1), buffers, nullptr);
  EXPECT_EQ(written.topkIds, out.topkIds);
  ASSERT_EQ(fake().launches.size(), 2u);
  EXPECT_EQ(fake().launches[0].params[7], out.topkIds);
  EXPECT_EQ(fake().launches[0].params[11], out.error);

  auto [kind, message] =
      errorOf([&] { router->route(inputs(t, 17, 2, 1), buffers, nullptr); });
  EXPECT_EQ(kind, Error::Kind::InvalidArgument);
  EXPECT_EQ(
      message,
      "route: num_tokens = 17 exceeds the buffers' capacity of 16 tokens");
  RouteBuffers noDispatch = router->allocateBuffers(4, false);
  EXPECT_FALSE(noDispatch.outputs().hasDispatch());
  fake().contextStack.clear();
}

TEST_F(RuntimeCudaRouterTest, HostSideChecks) {
  auto router = load(rttest::exampleManifest());
  Tensors t = allocate(*router, 8, 2);
  fake().contextStack.push_back(router->context());
  const RouteInputs good = inputs(t, 8, 2, 1);
  const RouteOutputs goodOut = outputs(t, true);
  struct Case {
    const char *what;
    std::function<void(RouteInputs &, RouteOutputs &)> mutate;
    std::string expected;
  };
  DeviceBuffer small = router->allocate(8 * 256 * 4 - 4);
  const std::vector<Case> cases = {
      {"negative T", [](RouteInputs &in, RouteOutputs &) { in.numTokens = -1; },
       "route: num_tokens = -1 must be >= 0"},
      {"T*k overflow",
       [](RouteInputs &in, RouteOutputs &) { in.numTokens = 300000000; },
       "route: num_tokens * top_k = 300000000 * 8 must fit in int32"},
      {"null logits", [](RouteInputs &in, RouteOutputs &) { in.logits = 0; },
       "route: logits is required (null device pointer)"},
      {"null weights",
       [](RouteInputs &, RouteOutputs &out) { out.topkWeights = 0; },
       "route: topk_weights is required (null device pointer)"},
      {"misaligned", [](RouteInputs &in, RouteOutputs &) { in.logits += 2; },
       "route: logits = " +
           [&] {
             std::ostringstream os;
             os << "0x" << std::hex << t.logits.get() + 2;
             return os.str();
           }() +
           " is not aligned to its 4-byte elements"},
      {"too small",
       [&](RouteInputs &in, RouteOutputs &) { in.logits = small.get(); },
       "route: logits needs 8192 bytes from " +
           [&] {
             std::ostringstream os;
             os << "0x" << std::hex << small.get();
             return os.str();
           }() +
           ", but its allocation holds only 8188 from there"},
      {"unknown memory",
       [](RouteInputs &in, RouteOutputs &) { in.bias = 0x1000; },
       "route: bias = 0x1000 is not memory the CUDA driver knows (pass "
       "device pointers)"},
      {"capture missing",
       [](RouteInputs &in, RouteOutputs &) { in.capture = 0; },
       "route: capture is required: this kernel writes the chosen ids to a "
       "[T, layers, k] capture buffer (the spec has capture: true)"},
      {"capture layers",
       [](RouteInputs &in, RouteOutputs &) { in.captureLayers = 0; },
       "route: capture_layers = 0 must be >= 1"},
      {"capture too small for L",
       [](RouteInputs &in, RouteOutputs &) { in.captureLayers = 3; },
       "route: capture needs 384 bytes from " +
           [&] {
             std::ostringstream os;
             os << "0x" << std::hex << t.capture.get();
             return os.str();
           }() +
           ", but its allocation holds only 256 from there"},
      {"forced ids to route",
       [&](RouteInputs &in, RouteOutputs &) { in.forcedIds = t.ids.get(); },
       "route: forced_ids given, but only replay takes them (call replay)"},
      {"hash inputs to route",
       [&](RouteInputs &in, RouteOutputs &) { in.tokenIds = t.ids.get(); },
       "route: token_ids / hash_table given, but only route_hash takes them "
       "(call routeHash)"},
      {"partial dispatch",
       [](RouteInputs &, RouteOutputs &out) { out.sortedSlots = 0; },
       "route: expert_counts, expert_offsets, sorted_slots and "
       "slot_positions go together: give all four or none"},
      {"short error record",
       [&](RouteInputs &, RouteOutputs &out) { out.error = t.error.get() + 8; },
       "route: error needs 48 bytes from " +
           [&] {
             std::ostringstream os;
             os << "0x" << std::hex << t.error.get() + 8;
             return os.str();
           }() +
           ", but its allocation holds only 40 from there"},
  };
  for (const Case &c : cases) {
    RouteInputs in = good;
    RouteOutputs out = goodOut;
    c.mutate(in, out);
    fake().launches.clear();
    fake().events.clear();
    auto [kind, message] = errorOf([&] { router->route(in, out, nullptr); });
    EXPECT_EQ(kind, Error::Kind::InvalidArgument) << c.what;
    EXPECT_EQ(message, c.expected) << c.what;
    // A rejected call launches and zeroes nothing.
    EXPECT_TRUE(fake().events.empty()) << c.what;
  }
  // Entry points the manifest does not have.
  auto [kind, message] =
      errorOf([&] { router->replay(good, goodOut, nullptr); });
  EXPECT_EQ(kind, Error::Kind::InvalidArgument);
  EXPECT_EQ(message, "replay: the kernels of spec 'deepseek-v3' (" +
                         dir / "manifest.json" +
                         ") have no replay entry point (they have route, "
                         "dispatch)");
  fake().contextStack.clear();
}

TEST_F(RuntimeCudaRouterTest, BoundsChecksCanBeTurnedOff) {
  options.checkBufferBounds = false;
  auto router = load(rttest::exampleManifest());
  Tensors t = allocate(*router, 8, 2);
  fake().contextStack.push_back(router->context());
  DeviceBuffer small = router->allocate(16);
  RouteInputs in = inputs(t, 8, 2, 1);
  in.logits = small.get(); // too small, but only presence is checked now
  fake().launches.clear();
  router->route(in, outputs(t, false), nullptr);
  EXPECT_EQ(fake().launches.size(), 1u);
  // Presence and alignment still are.
  in.logits = small.get() + 1;
  auto [kind, message] =
      errorOf([&] { router->route(in, outputs(t, false), nullptr); });
  EXPECT_EQ(kind, Error::Kind::InvalidArgument);
  EXPECT_NE(message.find("is not aligned to its 4-byte elements"),
            std::string::npos);
  fake().contextStack.clear();
}

TEST_F(RuntimeCudaRouterTest, StreamOfAnotherContext) {
  auto router = load(rttest::exampleManifest());
  Tensors t = allocate(*router, 4, 1);
  CUstream stream = nullptr;
  fake().contextStack.push_back(fakeContext("moegenFakeCudaOtherContext"));
  driver->streamCreate(&stream, 0);
  fake().contextStack.clear();
  fake().events.clear();
  auto [kind, message] = errorOf(
      [&] { router->route(inputs(t, 4, 1, 0), outputs(t, false), stream); });
  EXPECT_EQ(kind, Error::Kind::InvalidArgument);
  EXPECT_EQ(message.rfind("route: the stream belongs to CUDA context 0x", 0),
            0u)
      << message;
  EXPECT_NE(message.find(", not to the context the kernels were loaded in (0x"),
            std::string::npos)
      << message;
  EXPECT_TRUE(fake().events.empty());
  driver->streamDestroy(stream);
}

TEST_F(RuntimeCudaRouterTest, SpecWithoutBiasOrCapture) {
  json m = rttest::exampleManifest();
  json &params = m["kernels"][0]["params"];
  // bias, capture, its two sizes and layer
  params.erase(params.begin() + 2, params.begin() + 7);
  m.erase("capture_dtype");
  auto router = load(m);
  Tensors t = allocate(*router, 4, 1);
  fake().contextStack.push_back(router->context());
  RouteInputs in = inputs(t, 4, 1, 0);
  auto [kind, message] =
      errorOf([&] { router->route(in, outputs(t, false), nullptr); });
  EXPECT_EQ(message, "route: bias given, but this route kernel takes none "
                     "(the spec has no score_bias)");
  in.bias = 0;
  std::tie(kind, message) =
      errorOf([&] { router->route(in, outputs(t, false), nullptr); });
  EXPECT_EQ(message, "route: capture given, but this route kernel writes no "
                     "capture (the spec has no capture: true)");
  in.capture = 0;
  fake().launches.clear();
  router->route(in, outputs(t, false), nullptr);
  ASSERT_EQ(fake().launches.size(), 1u);
  EXPECT_EQ(fake().launches[0].params,
            (std::vector<uint64_t>{t.logits.get(), 4, t.ids.get(), 4,
                                   t.weights.get(), 4, t.error.get()}));
  fake().contextStack.clear();
}

TEST_F(RuntimeCudaRouterTest, ErrorRecordStaysUntilReported) {
  auto router = load(rttest::exampleManifest());
  Tensors t = allocate(*router, 4, 2);
  fake().contextStack.push_back(router->context());
  auto *record = reinterpret_cast<int64_t *>(t.error.get());
  std::memset(record, 0, 48);
  fake().events.clear();
  router->route(inputs(t, 4, 2, 1), outputs(t, true), nullptr);
  // No memset: a launch leaves the record to the kernels.
  EXPECT_EQ(fake().events, (std::vector<std::string>{"route", "dispatch"}));
  EXPECT_EQ(router->readError(nullptr, t.error.get()), "");
  EXPECT_NO_THROW(router->checkErrors(nullptr, t.error.get()));

  // What a kernel writes for a bad forced id, as the kernels would. A
  // later call does not clear it (the stand-in kernels write nothing; a
  // real one only moves the record towards the earliest violation): the
  // first report of it is the earliest of all calls since the last report,
  // and the report zeroes the record.
  const int64_t forced[6] = {
      int64_t(KernelErrorCode::ForcedIdOutOfRange), 3, 3, 1, 300, 0};
  std::memcpy(record, forced, sizeof forced);
  router->route(inputs(t, 4, 2, 1), outputs(t, true), nullptr);
  EXPECT_EQ(router->readError(nullptr, t.error.get()),
            "forced_ids[3][1] = 300: expert id outside [0, 256)");
  for (int i = 0; i < 6; ++i)
    EXPECT_EQ(record[i], 0) << i;
  EXPECT_EQ(router->readError(nullptr, t.error.get()), "");
  std::memcpy(record, forced, sizeof forced);
  auto [kind, message] =
      errorOf([&] { router->checkErrors(nullptr, t.error.get(), "layer 2"); });
  EXPECT_EQ(kind, Error::Kind::Kernel);
  EXPECT_EQ(message,
            "layer 2: forced_ids[3][1] = 300: expert id outside [0, 256)");
  EXPECT_NO_THROW(router->checkErrors(nullptr, t.error.get(), "layer 3"));

  // The router's own record when the call gives none, the same way.
  RouteOutputs out = outputs(t, false);
  out.error = 0;
  router->route(inputs(t, 4, 2, 1), out, nullptr);
  auto *own = reinterpret_cast<int64_t *>(fake().launches.back().params[11]);
  EXPECT_NE(own, record);
  const int64_t nan[6] = {
      int64_t(KernelErrorCode::NonFiniteLogit), 2, 2, 17, 0x7fc00000, 0};
  std::memcpy(own, nan, sizeof nan);
  router->route(inputs(t, 4, 2, 1), out, nullptr);
  EXPECT_EQ(router->readError(nullptr),
            "logits[2][17] is nan: logits must be finite or -inf");
  EXPECT_EQ(router->readError(nullptr), "");
  fake().contextStack.clear();
}

TEST_F(RuntimeCudaRouterTest, AllocatedRecordsStartAtZero) {
  auto router = load(rttest::exampleManifest());
  RouteBuffers buffers = router->allocateBuffers(4);
  auto *record = reinterpret_cast<int64_t *>(buffers.outputs().error);
  for (int i = 0; i < 6; ++i)
    EXPECT_EQ(record[i], 0) << i;
}

//===----------------------------------------------------------------------===//
// GPU tests: real kernels on a real device
//===----------------------------------------------------------------------===//

/// The kernel directory and a loaded router, or the reason to skip.
class RuntimeGpuTest : public ::testing::Test {
protected:
  void SetUp() override {
    const char *dir = std::getenv("MOEGEN_TEST_KERNEL_DIR");
    if (!dir || !*dir)
      GTEST_SKIP() << "GPU test: set MOEGEN_TEST_KERNEL_DIR to a `moegen "
                      "compile --emit=cubin -o DIR` output directory";
    try {
      CudaDriver::get();
    } catch (const Error &e) {
      GTEST_SKIP() << "GPU test: " << e.what();
    }
    router = CudaRouter::load(dir);
  }
  std::unique_ptr<CudaRouter> router;
};

TEST_F(RuntimeGpuTest, RouteProducesValidIdsAndWeights) {
  const Manifest &m = router->manifest();
  if (!router->hasEntry(EntryKind::Route) || m.logitsDType != DType::F32)
    GTEST_SKIP() << "needs a route kernel with f32 logits";
  const int64_t tokens = 1000, e = m.numExperts, k = m.topK;
  std::mt19937 rng(42);
  std::normal_distribution<float> normal;
  std::vector<float> logits(size_t(tokens * e)), bias(size_t(e), 0.0f);
  for (float &x : logits)
    x = normal(rng);
  const CUstream stream = nullptr;
  const CudaDriver &driver = router->driver();
  ScopedContext scope(driver, router->context());
  DeviceBuffer dLogits = router->allocate(logits.size() * 4);
  DeviceBuffer dBias = router->allocate(bias.size() * 4);
  const int64_t layers = 2;
  DeviceBuffer dCapture =
      router->allocate(size_t(tokens * layers * k) *
                       (m.captureDType ? byteSize(*m.captureDType) : 4));
  dLogits.upload(logits.data(), logits.size() * 4, stream);
  dBias.upload(bias.data(), bias.size() * 4, stream);
  RouteBuffers buffers = router->allocateBuffers(tokens);

  RouteInputs in;
  in.numTokens = tokens;
  in.logits = dLogits.get();
  const Kernel *route = m.find(EntryKind::Route);
  if (route->findParam("bias") >= 0)
    in.bias = dBias.get();
  if (route->findParam("capture") >= 0) {
    in.capture = dCapture.get();
    in.captureLayers = layers;
    in.captureLayer = 1;
  }
  RouteOutputs out = router->route(in, buffers, stream);
  router->checkErrors(stream);

  std::vector<int32_t> ids(size_t(tokens * k));
  std::vector<float> weights(size_t(tokens * k));
  driver.check(
      driver.memcpyDtoHAsync(ids.data(), out.topkIds, ids.size() * 4, stream),
      "cuMemcpyDtoHAsync");
  driver.check(driver.memcpyDtoHAsync(weights.data(), out.topkWeights,
                                      weights.size() * 4, stream),
               "cuMemcpyDtoHAsync");
  driver.check(driver.streamSynchronize(stream), "cuStreamSynchronize");
  for (int64_t t = 0; t < tokens; ++t) {
    std::set<int32_t> seen;
    for (int64_t j = 0; j < k; ++j) {
      int32_t id = ids[size_t(t * k + j)];
      ASSERT_GE(id, 0);
      ASSERT_LT(id, e);
      ASSERT_TRUE(seen.insert(id).second) << "token " << t;
      ASSERT_TRUE(std::isfinite(weights[size_t(t * k + j)]));
    }
  }

  // A NaN logit is reported through the error record.
  logits[size_t(5 * e + 3)] = std::nanf("");
  dLogits.upload(logits.data(), logits.size() * 4, stream);
  router->route(in, buffers, stream);
  EXPECT_EQ(router->readError(stream, out.error),
            "logits[5][3] is nan: logits must be finite or -inf");
}

} // namespace

//===----------------------------------------------------------------------===//
// The compiler's own manifests, bound by the router (on the fake driver)
//===----------------------------------------------------------------------===//

/// Compiles every template with `moegen compile --emit=ptx` (no ptxas
/// needed), swaps the PTX for a fake one with the same symbols and
/// parameter counts, and runs each entry point through the router: every
/// parameter of the real manifests must bind, in order, with the sizes and
/// grids the launch rules give.
TEST_F(RuntimeCudaRouterTest, CompilerManifestsBind) {
  if (!std::filesystem::exists(MOEGEN_TOOL_PATH))
    GTEST_SKIP() << MOEGEN_TOOL_PATH << " is not built";
  int templates = 0;
  for (const auto &file : std::filesystem::directory_iterator(
           std::string(MOEGEN_SOURCE_DIR) + "/templates")) {
    if (file.path().extension() != ".yaml")
      continue;
    ++templates;
    const std::string name = file.path().stem().string();
    const std::string out = dir / name;
    const std::string command =
        std::string(MOEGEN_TOOL_PATH) + " compile '" + file.path().string() +
        "' --emit=ptx --arch sm_90 -o '" + out + "' > '" + out + ".log' 2>&1";
    ASSERT_EQ(std::system(command.c_str()), 0)
        << command << "\n"
        << rttest::readText(out + ".log");
    Manifest real = loadManifest(out);
    EXPECT_TRUE(real.cubinPath.empty()) << name;
    std::string fakePtx = "FAKE-PTX sm_90\n";
    for (const Kernel &kernel : real.kernels)
      fakePtx +=
          kernel.symbol + " " + std::to_string(kernel.params.size()) + "\n";
    rttest::writeText(real.ptxPath, fakePtx);
    auto router = CudaRouter::load(out, options);
    EXPECT_STREQ(router->loadedBinaryKind(), "ptx") << name;

    const int64_t tokens = 5, vocab = 7, layers = 3;
    const int64_t e = real.numExperts, k = real.topK;
    std::vector<DeviceBuffer> keep;
    auto buffer = [&](int64_t elements, size_t bytes) {
      keep.push_back(router->allocate(size_t(elements) * bytes));
      return keep.back().get();
    };
    RouteInputs in;
    in.numTokens = tokens;
    in.logits = buffer(tokens * e, byteSize(real.logitsDType));
    RouteBuffers buffers = router->allocateBuffers(tokens);
    fake().contextStack.push_back(router->context());
    for (const Kernel &kernel : real.kernels) {
      // The routing entries; dispatch follows them, and permute and
      // combine move rows (bound in their own tests).
      if (kernel.entry == EntryKind::Dispatch ||
          kernel.entry == EntryKind::Permute ||
          kernel.entry == EntryKind::Combine)
        continue;
      // A kernel with a fused dispatch runs in its entry's place below.
      if (kernel.fusedDispatchMaxSlots > 0)
        continue;
      RouteInputs call = in;
      if (kernel.findParam("bias") >= 0)
        call.bias = buffer(e, 4);
      if (kernel.findParam("capture") >= 0) {
        call.capture =
            buffer(tokens * layers * k, byteSize(*real.captureDType));
        call.captureLayers = layers;
        call.captureLayer = 2;
      }
      if (kernel.entry == EntryKind::RouteHash) {
        call.tokenIds = buffer(tokens, 4);
        call.hashTable = buffer(vocab * k, 4);
        call.hashVocab = vocab;
      }
      if (kernel.entry == EntryKind::Replay)
        call.forcedIds = buffer(tokens * k, 4);
      if (kernel.findParam("shared_gate_logits") >= 0)
        call.sharedGateLogits = buffer(tokens, byteSize(real.logitsDType));
      fake().launches.clear();
      if (kernel.entry == EntryKind::Route)
        router->route(call, buffers, nullptr);
      else if (kernel.entry == EntryKind::RouteHash)
        router->routeHash(call, buffers, nullptr);
      else
        router->replay(call, buffers, nullptr);
      const bool dispatch = router->hasEntry(EntryKind::Dispatch);
      // Five tokens that dispatch: one kernel where the entry has one with
      // a fused dispatch.
      const Kernel *fused = real.findFused(kernel.entry);
      EXPECT_EQ(router->fusesDispatch(kernel.entry, tokens), fused != nullptr)
          << name;
      const Kernel &launched = fused ? *fused : kernel;
      ASSERT_EQ(fake().launches.size(), dispatch && !fused ? 2u : 1u) << name;
      const FakeCudaLaunch &launch = fake().launches[0];
      EXPECT_EQ(launch.symbol, launched.symbol);
      ASSERT_EQ(launch.params.size(), launched.params.size());
      const int64_t perBlock = launched.launch.tokensPerBlock;
      EXPECT_EQ(launch.grid,
                perBlock ? unsigned((tokens + perBlock - 1) / perBlock) : 1u);
      EXPECT_EQ(launch.block, unsigned(launched.launch.blockDim));
      // Every pointer is bound, every size is the extent it names.
      for (size_t i = 0; i < launched.params.size(); ++i) {
        const Param &param = launched.params[i];
        if (param.kind == ParamKind::Pointer) {
          EXPECT_NE(launch.params[i], 0u) << name << " " << param.name;
        }
        if (param.kind == ParamKind::Size) {
          const Dim &dim = launched.params[param.ofParam].shape[param.dim];
          int64_t want = dim.symbol == Dim::Symbol::T    ? tokens
                         : dim.symbol == Dim::Symbol::V  ? vocab
                         : dim.symbol == Dim::Symbol::L  ? layers
                         : dim.symbol == Dim::Symbol::TK ? tokens * k
                                                         : -1;
          EXPECT_EQ(launch.params[i], uint64_t(want))
              << name << " " << param.name;
        }
        if (param.kind == ParamKind::Scalar) {
          EXPECT_EQ(launch.params[i], 2u) << name;
        }
      }
      if (dispatch && !fused) {
        const Kernel &d = *real.find(EntryKind::Dispatch);
        ASSERT_EQ(fake().launches[1].params.size(), d.params.size());
        EXPECT_EQ(fake().launches[1].params[0], buffers.outputs().topkIds);
      }
    }
    fake().contextStack.clear();
  }
  EXPECT_GE(templates, 7);
}
