//===- GpuEmuDriverTest.cpp - The GPU emulator as a CUDA driver -----------===//
//
// The emulated driver through rt::CudaDriver, as the runtime uses it:
// memory and pointer attributes, the module registry, launches of small
// hand-written kernels (in the lowered kernels' calling convention) and
// their faults, the CudaRouter on emulated kernels, and
// CudaDriver::fromEntryPoints itself.
//
//===----------------------------------------------------------------------===//

#include "compiler/backend/gpuemu/EmuCudaDriver.h"
#include "runtime/Error.h"
#include "runtime/cuda/CudaDriver.h"
#include "runtime/cuda/CudaRouter.h"
#include "runtime/cuda/DeviceTimer.h"
#include "runtime/ep/DeviceExpertParallel.h"
#include "tests/unit/RuntimeTestUtil.h"

#include <gtest/gtest.h>

#include <array>
#include <cstring>
#include <numeric>
#include <thread>
#include <vector>

using namespace moegen;
using namespace moegen::gpuemu;
using rt::CudaDriver;
using rt::Error;
using rt::DeviceTimer;
using rt::TimingSummary;
using rt::summarize;

namespace {

template <typename F> std::pair<Error::Kind, std::string> errorOf(F &&f) {
  try {
    f();
  } catch (const Error &e) {
    return {e.kind(), e.what()};
  }
  return {Error::Kind::Io, "<no error>"};
}

/// The argument `index` of a kernel thread, in the packed convention.
template <typename T> T arg(void **args, int index) {
  return *static_cast<T *>(args[index]);
}

/// out[blockIdx * blockDim + threadIdx] = that index. Params: int32_t *out,
/// int64_t blockDim; then blockIdx, threadIdx, ctx.
void writeGlobalIndex(void **args) {
  auto *out = arg<int32_t *>(args, 0);
  const int64_t blockDim = arg<int64_t>(args, 1);
  const int64_t index =
      arg<int64_t>(args, 2) * blockDim + arg<int64_t>(args, 3);
  void *ctx = arg<void *>(args, 4);
  moegen_emu_check_access(ctx, out + index, sizeof(int32_t), 1, 0, 0);
  out[index] = int32_t(index);
}

/// The route kernel of the example manifest (12 params; topk_ids is param
/// 7): thread 0 of block b writes topk_ids[b] = b + 100.
void routeWritesBlockIds(void **args) {
  auto *ids = arg<int32_t *>(args, 7);
  const int64_t block = arg<int64_t>(args, 12);
  if (arg<int64_t>(args, 13) != 0)
    return;
  moegen_emu_check_access(arg<void *>(args, 14), ids + block, 4, 1, 0, 0);
  ids[block] = int32_t(block + 100);
}

/// Writes one element past topk_ids, whose row count (param 8) it reads.
void routeWritesPastTheEnd(void **args) {
  auto *ids = arg<int32_t *>(args, 7);
  const int64_t end = arg<int64_t>(args, 8) * 8;
  if (arg<int64_t>(args, 12) != 0 || arg<int64_t>(args, 13) != 0)
    return;
  moegen_emu_check_access(arg<void *>(args, 14), ids + end, 4, 1, 0, 0);
  ids[end] = 1;
}

void doNothing(void **) {}

class GpuEmuDriverTest : public ::testing::Test {
protected:
  void SetUp() override {
    driver.check(driver.devicePrimaryCtxRetain(&context, 0),
                 "cuDevicePrimaryCtxRetain");
    driver.check(driver.ctxPushCurrent(context), "cuCtxPushCurrent");
    takeLastFault();
  }
  void TearDown() override {
    CUcontext popped = nullptr;
    driver.ctxPopCurrent(&popped);
    driver.devicePrimaryCtxRelease(0);
  }

  CUdeviceptr allocate(size_t bytes) {
    CUdeviceptr pointer = 0;
    driver.check(driver.memAlloc(&pointer, bytes), "cuMemAlloc");
    return pointer;
  }
  CUfunction load(const std::string &image, const char *symbol) {
    CUmodule module = nullptr;
    driver.check(driver.moduleLoadData(&module, image.c_str()),
                 "cuModuleLoadData");
    CUfunction function = nullptr;
    driver.check(driver.moduleGetFunction(&function, module, symbol),
                 "cuModuleGetFunction");
    return function;
  }
  CUresult launch(CUfunction function, unsigned grid, unsigned block,
                  std::vector<uint64_t> params, unsigned sharedBytes = 0) {
    std::vector<void *> pointers;
    for (uint64_t &value : params)
      pointers.push_back(&value);
    return driver.launchKernel(function, grid, 1, 1, block, 1, 1, sharedBytes,
                               nullptr, pointers.data(), nullptr);
  }

  const CudaDriver &driver = emulatedDriver();
  CUcontext context = nullptr;
};

TEST_F(GpuEmuDriverTest, PresentsOneSm90Device) {
  EXPECT_EQ(driver.libraryName(), "moegen GPU emulator");
  EXPECT_EQ(driver.version(), 12080);
  EXPECT_EQ(driver.deviceCount(), 1);
  char name[64] = {};
  ASSERT_EQ(driver.deviceGetName(name, sizeof name, 0), CUDA_SUCCESS);
  EXPECT_STREQ(name, "moegen GPU emulator (sm_90)");
  int major = 0, minor = -1, optIn = 0;
  driver.deviceGetAttribute(&major,
                            CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, 0);
  driver.deviceGetAttribute(&minor,
                            CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, 0);
  driver.deviceGetAttribute(
      &optIn, CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN, 0);
  EXPECT_EQ(major, 9);
  EXPECT_EQ(minor, 0);
  EXPECT_EQ(optIn, 227 * 1024);
  CUdevice device = -1;
  EXPECT_EQ(driver.deviceGet(&device, 1), CUDA_ERROR_INVALID_DEVICE);
  EXPECT_EQ(driver.describe(CUDA_ERROR_INVALID_VALUE),
            "CUDA_ERROR_INVALID_VALUE (invalid argument)");
}

TEST_F(GpuEmuDriverTest, ContextsAndStreams) {
  CUcontext current = nullptr;
  driver.ctxGetCurrent(&current);
  EXPECT_EQ(current, context);
  CUstream stream = nullptr;
  ASSERT_EQ(driver.streamCreate(&stream, 0), CUDA_SUCCESS);
  CUcontext streamContext = nullptr;
  EXPECT_EQ(driver.streamGetCtx(stream, &streamContext), CUDA_SUCCESS);
  EXPECT_EQ(streamContext, context);
  EXPECT_EQ(driver.streamSynchronize(stream), CUDA_SUCCESS);
  EXPECT_EQ(driver.streamDestroy(stream), CUDA_SUCCESS);
  EXPECT_EQ(driver.streamSynchronize(stream), CUDA_ERROR_INVALID_HANDLE);

  // Memory needs a current context, as on a GPU.
  CUcontext popped = nullptr;
  driver.ctxPopCurrent(&popped);
  CUdeviceptr pointer = 0;
  EXPECT_EQ(driver.memAlloc(&pointer, 16), CUDA_ERROR_INVALID_CONTEXT);
  driver.ctxPushCurrent(context);
}

// Work completes when submitted, so events read the host's clock when
// recorded; handles are checked as on a GPU.
TEST_F(GpuEmuDriverTest, EventsMeasureTheTimeBetweenThem) {
  CUevent start = nullptr, end = nullptr;
  ASSERT_EQ(driver.eventCreate(&start, CU_EVENT_DEFAULT), CUDA_SUCCESS);
  ASSERT_EQ(driver.eventCreate(&end, CU_EVENT_DEFAULT), CUDA_SUCCESS);
  float ms = -1;
  EXPECT_EQ(driver.eventElapsedTime(&ms, start, end), CUDA_ERROR_NOT_READY);
  ASSERT_EQ(driver.eventRecord(start, nullptr), CUDA_SUCCESS);
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  ASSERT_EQ(driver.eventRecord(end, nullptr), CUDA_SUCCESS);
  ASSERT_EQ(driver.eventSynchronize(end), CUDA_SUCCESS);
  ASSERT_EQ(driver.eventElapsedTime(&ms, start, end), CUDA_SUCCESS);
  EXPECT_GE(ms, 19.0f);
  EXPECT_LT(ms, 5000.0f);
  EXPECT_EQ(driver.eventElapsedTime(nullptr, start, end),
            CUDA_ERROR_INVALID_VALUE);
  EXPECT_EQ(driver.eventDestroy(start), CUDA_SUCCESS);
  EXPECT_EQ(driver.eventDestroy(start), CUDA_ERROR_INVALID_HANDLE);
  EXPECT_EQ(driver.eventRecord(start, nullptr), CUDA_ERROR_INVALID_HANDLE);
  EXPECT_EQ(driver.eventElapsedTime(&ms, start, end),
            CUDA_ERROR_INVALID_HANDLE);
  EXPECT_EQ(driver.eventDestroy(end), CUDA_SUCCESS);
}

// The device timer writes its flush buffer before each sample (here the
// emulator's memset), then times the call between two events.
TEST_F(GpuEmuDriverTest, DeviceTimerTimesOneCallWithAFlush) {
  DeviceTimer timer(driver, context, 1 << 20);
  int calls = 0;
  double us = timer.sampleUs(
      [&](CUstream) {
        ++calls;
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
      },
      nullptr);
  EXPECT_EQ(calls, 1);
  EXPECT_GE(us, 4900.0);
  EXPECT_LT(us, 5e6);
  // A call that throws leaves the timer usable.
  EXPECT_THROW(timer.sampleUs([](CUstream) { throw Error(Error::Kind::Driver, "x"); },
                              nullptr),
               Error);
  EXPECT_GE(timer.sampleUs([](CUstream) {}, nullptr), 0.0);
}

TEST(DeviceTimerSummary, MedianAndNearestRankPercentiles) {
  TimingSummary s = summarize({5, 1, 4, 2, 3});
  EXPECT_EQ(s.samples, 5u);
  EXPECT_DOUBLE_EQ(s.medianUs, 3);
  EXPECT_DOUBLE_EQ(s.p10Us, 1);
  EXPECT_DOUBLE_EQ(s.p90Us, 5);
  s = summarize({4, 1, 3, 2});
  EXPECT_DOUBLE_EQ(s.medianUs, 2.5);
  std::vector<double> hundred(100);
  std::iota(hundred.begin(), hundred.end(), 1.0);
  s = summarize(hundred);
  EXPECT_DOUBLE_EQ(s.p10Us, 10);
  EXPECT_DOUBLE_EQ(s.p90Us, 90);
  EXPECT_EQ(summarize({}).samples, 0u);
}

TEST_F(GpuEmuDriverTest, AllocationAndMemcpy) {
  const CUdeviceptr pointer = allocate(1000);
  EXPECT_EQ(pointer % 256, 0u);
  std::vector<uint8_t> host(1000), back(1000);
  std::iota(host.begin(), host.end(), uint8_t(0));
  driver.check(driver.memcpyHtoDAsync(pointer, host.data(), 1000, nullptr),
               "cuMemcpyHtoDAsync");
  driver.check(driver.memcpyDtoHAsync(back.data(), pointer, 1000, nullptr),
               "cuMemcpyDtoHAsync");
  EXPECT_EQ(back, host);
  driver.check(driver.memsetD8Async(pointer + 10, 0x7f, 5, nullptr),
               "cuMemsetD8Async");
  driver.check(driver.memcpyDtoHAsync(back.data(), pointer, 1000, nullptr),
               "cuMemcpyDtoHAsync");
  EXPECT_EQ(back[9], 9);
  EXPECT_EQ(back[10], 0x7f);
  EXPECT_EQ(back[14], 0x7f);
  EXPECT_EQ(back[15], 15);
  // Copies and memsets stay inside one allocation.
  EXPECT_EQ(driver.memcpyDtoHAsync(back.data(), pointer + 1, 1000, nullptr),
            CUDA_ERROR_INVALID_VALUE);
  EXPECT_EQ(driver.memsetD8Async(pointer + 1000, 0, 1, nullptr),
            CUDA_ERROR_INVALID_VALUE);
  EXPECT_EQ(driver.memFree(pointer + 8), CUDA_ERROR_INVALID_VALUE);
  EXPECT_EQ(driver.memFree(pointer), CUDA_SUCCESS);
  EXPECT_EQ(driver.memFree(pointer), CUDA_ERROR_INVALID_VALUE);
  CUdeviceptr none = 0;
  EXPECT_EQ(driver.memAlloc(&none, 0), CUDA_ERROR_INVALID_VALUE);
}

TEST_F(GpuEmuDriverTest, PointerAttributes) {
  const CUdeviceptr base = allocate(1000);
  // What the CudaRouter's bounds check asks.
  auto query = [&](CUdeviceptr pointer) {
    unsigned memoryType = 99;
    CUdeviceptr start = 1;
    size_t size = 1;
    std::array<CUpointer_attribute, 3> attributes = {
        CU_POINTER_ATTRIBUTE_MEMORY_TYPE, CU_POINTER_ATTRIBUTE_RANGE_START_ADDR,
        CU_POINTER_ATTRIBUTE_RANGE_SIZE};
    std::array<void *, 3> data = {&memoryType, &start, &size};
    EXPECT_EQ(
        driver.pointerGetAttributes(3, attributes.data(), data.data(), pointer),
        CUDA_SUCCESS);
    return std::make_tuple(memoryType, start, size);
  };
  EXPECT_EQ(query(base + 996), std::make_tuple(unsigned(CU_MEMORYTYPE_DEVICE),
                                               base, size_t(1000)));
  EXPECT_EQ(query(base), query(base + 500));
  EXPECT_EQ(query(base + 1000), std::make_tuple(0u, CUdeviceptr(0), size_t(0)));
  int onTheStack = 0;
  EXPECT_EQ(query(CUdeviceptr(&onTheStack)),
            std::make_tuple(0u, CUdeviceptr(0), size_t(0)));

  // The single form fails for memory the driver does not know.
  CUdeviceptr start = 0;
  EXPECT_EQ(driver.pointerGetAttribute(
                &start, CU_POINTER_ATTRIBUTE_RANGE_START_ADDR, base + 7),
            CUDA_SUCCESS);
  EXPECT_EQ(start, base);
  EXPECT_EQ(driver.pointerGetAttribute(
                &start, CU_POINTER_ATTRIBUTE_RANGE_START_ADDR, base + 1000),
            CUDA_ERROR_INVALID_VALUE);
  driver.memFree(base);
  EXPECT_EQ(std::get<0>(query(base)), 0u);
}

TEST_F(GpuEmuDriverTest, HostMemoryRegisteredForAScope) {
  // Caller-owned host memory is device memory while registered (the Python
  // package's tensors on backend gpu-emu), and unknown again after.
  std::vector<int32_t> host(250);
  const CUdeviceptr pointer = CUdeviceptr(host.data());
  auto rangeSize = [&](CUdeviceptr p) {
    size_t size = 0;
    CUpointer_attribute attribute = CU_POINTER_ATTRIBUTE_RANGE_SIZE;
    void *data = &size;
    EXPECT_EQ(driver.pointerGetAttributes(1, &attribute, &data, p),
              CUDA_SUCCESS);
    return size;
  };
  {
    gpuemu::ScopedDeviceMemory registered(host.data(), 1000);
    EXPECT_TRUE(registered.registered());
    EXPECT_EQ(rangeSize(pointer + 4), 1000u);
    // Overlaps, inside or across its start, are refused; so is nothing.
    gpuemu::ScopedDeviceMemory inside(host.data() + 10, 40);
    gpuemu::ScopedDeviceMemory across(
        reinterpret_cast<const char *>(host.data()) - 8, 16);
    gpuemu::ScopedDeviceMemory empty(host.data(), 0);
    EXPECT_FALSE(inside.registered());
    EXPECT_FALSE(across.registered());
    EXPECT_FALSE(empty.registered());
    EXPECT_EQ(rangeSize(pointer + 4), 1000u);
    // memset bounds follow it.
    EXPECT_EQ(driver.memsetD8Async(pointer, 0x5A, 1000, nullptr),
              CUDA_SUCCESS);
    EXPECT_EQ(host[249], 0x5A5A5A5A);
    EXPECT_NE(driver.memsetD8Async(pointer, 0, 1001, nullptr), CUDA_SUCCESS);
  }
  EXPECT_EQ(rangeSize(pointer + 4), 0u);
}

TEST_F(GpuEmuDriverTest, ModuleRegistry) {
  const std::string image =
      registerModule({{"first", 0, doNothing}, {"second", 1, doNothing}});
  EXPECT_EQ(image.rfind("MOEGEN-EMU-MODULE ", 0), 0u) << image;
  CUmodule module = nullptr;
  ASSERT_EQ(driver.moduleLoadData(&module, image.c_str()), CUDA_SUCCESS);
  CUfunction first = nullptr, second = nullptr, missing = nullptr;
  EXPECT_EQ(driver.moduleGetFunction(&first, module, "first"), CUDA_SUCCESS);
  EXPECT_EQ(driver.moduleGetFunction(&second, module, "second"), CUDA_SUCCESS);
  EXPECT_NE(first, second);
  EXPECT_EQ(driver.moduleGetFunction(&missing, module, "third"),
            CUDA_ERROR_NOT_FOUND);
  EXPECT_EQ(driver.moduleUnload(module), CUDA_SUCCESS);
  EXPECT_EQ(driver.moduleGetFunction(&first, module, "first"),
            CUDA_ERROR_INVALID_HANDLE);

  // Anything else is not an image, and the PTX JIT log says why.
  auto loadEx = [&](const std::string &text, std::string &log) {
    std::vector<char> buffer(256, '\0');
    std::array<CUjit_option, 2> keys = {CU_JIT_ERROR_LOG_BUFFER,
                                        CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES};
    std::array<void *, 2> values = {
        buffer.data(), reinterpret_cast<void *>(uintptr_t(buffer.size()))};
    CUmodule loaded = nullptr;
    CUresult result = driver.moduleLoadDataEx(&loaded, text.c_str(), 2,
                                              keys.data(), values.data());
    log = buffer.data();
    if (result == CUDA_SUCCESS)
      driver.moduleUnload(loaded);
    return result;
  };
  std::string log;
  EXPECT_EQ(loadEx(image, log), CUDA_SUCCESS);
  EXPECT_EQ(loadEx(".version 8.0\n.target sm_90\n", log),
            CUDA_ERROR_INVALID_IMAGE);
  EXPECT_NE(log.find("not a moegen GPU emulator module"), std::string::npos)
      << log;
  EXPECT_EQ(
      loadEx("MOEGEN-EMU-MODULE 999999 " + image.substr(image.rfind(' ') + 1),
             log),
      CUDA_ERROR_INVALID_IMAGE);
  EXPECT_EQ(log, "no module 999999 is registered");
  // The same number from another process.
  std::string foreign = image;
  foreign[foreign.size() - 2] = foreign[foreign.size() - 2] == '0' ? '1' : '0';
  EXPECT_EQ(loadEx(foreign, log), CUDA_ERROR_INVALID_IMAGE);
  EXPECT_NE(log.find("another process"), std::string::npos) << log;
  EXPECT_EQ(driver.moduleLoadData(&module, "FAKE-PTX sm_90\n"),
            CUDA_ERROR_INVALID_IMAGE);

  // Once its code is gone, the image no longer loads.
  unregisterModule(image);
  EXPECT_EQ(driver.moduleLoadData(&module, image.c_str()),
            CUDA_ERROR_INVALID_IMAGE);
}

TEST_F(GpuEmuDriverTest, LaunchRunsEveryThread) {
  CUfunction function =
      load(registerModule({{"write_global_index", 2, writeGlobalIndex}}),
           "write_global_index");
  constexpr unsigned kGrid = 3, kBlock = 96;
  const CUdeviceptr out = allocate(kGrid * kBlock * 4);
  ASSERT_EQ(launch(function, kGrid, kBlock, {out, kBlock}), CUDA_SUCCESS)
      << takeLastFault();
  std::vector<int32_t> values(kGrid * kBlock), expected(kGrid * kBlock);
  std::iota(expected.begin(), expected.end(), 0);
  driver.check(
      driver.memcpyDtoHAsync(values.data(), out, values.size() * 4, nullptr),
      "cuMemcpyDtoHAsync");
  EXPECT_EQ(values, expected);
  EXPECT_EQ(takeLastFault(), "");
  driver.memFree(out);
}

TEST_F(GpuEmuDriverTest, LaunchChecksGeometryAndSharedMemory) {
  CUfunction function =
      load(registerModule({{"nothing", 0, doNothing}}), "nothing");
  EXPECT_EQ(launch(function, 1, 1024, {}), CUDA_SUCCESS);
  EXPECT_EQ(launch(function, 1, 1025, {}), CUDA_ERROR_INVALID_VALUE);
  EXPECT_EQ(launch(function, 0, 32, {}), CUDA_ERROR_INVALID_VALUE);
  EXPECT_EQ(driver.launchKernel(function, 2, 2, 1, 32, 1, 1, 0, nullptr,
                                nullptr, nullptr),
            CUDA_ERROR_NOT_SUPPORTED);
  int notAFunction = 0;
  EXPECT_EQ(launch(reinterpret_cast<CUfunction>(&notAFunction), 1, 1, {}),
            CUDA_ERROR_INVALID_HANDLE);

  // 48 KiB without opting in, up to 227 KiB with.
  EXPECT_EQ(launch(function, 1, 32, {}, 48 * 1024), CUDA_SUCCESS);
  EXPECT_EQ(launch(function, 1, 32, {}, 48 * 1024 + 1),
            CUDA_ERROR_INVALID_VALUE);
  EXPECT_EQ(driver.funcSetAttribute(
                function, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                227 * 1024 + 1),
            CUDA_ERROR_INVALID_VALUE);
  EXPECT_EQ(driver.funcSetAttribute(
                function, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                227 * 1024),
            CUDA_SUCCESS);
  int limit = 0;
  EXPECT_EQ(
      driver.funcGetAttribute(
          &limit, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, function),
      CUDA_SUCCESS);
  EXPECT_EQ(limit, 227 * 1024);
  EXPECT_EQ(launch(function, 1, 32, {}, 227 * 1024), CUDA_SUCCESS);
  EXPECT_EQ(launch(function, 1, 32, {}, 227 * 1024 + 1),
            CUDA_ERROR_INVALID_VALUE);
}

TEST_F(GpuEmuDriverTest, OutOfBoundsWriteFailsTheLaunch) {
  CUfunction function =
      load(registerModule({{"write_global_index", 2, writeGlobalIndex}}),
           "write_global_index");
  // 100 elements, 128 threads.
  const CUdeviceptr out = allocate(100 * 4);
  ASSERT_EQ(launch(function, 2, 64, {out, 64}), CUDA_ERROR_LAUNCH_FAILED);
  const std::string described = driver.describe(CUDA_ERROR_LAUNCH_FAILED);
  const std::string fault = takeLastFault();
  EXPECT_EQ(described, "CUDA_ERROR_LAUNCH_FAILED (" + fault + ")");
  EXPECT_NE(fault.find("write_global_index"), std::string::npos) << fault;
  EXPECT_NE(fault.find("seed"), std::string::npos) << fault;
  EXPECT_EQ(fault.find('\n'), std::string::npos) << fault;
  EXPECT_EQ(takeLastFault(), "");
  EXPECT_EQ(driver.describe(CUDA_ERROR_LAUNCH_FAILED),
            "CUDA_ERROR_LAUNCH_FAILED (unspecified launch failure)");

  // A fault is not sticky: the next launch runs.
  const CUdeviceptr big = allocate(128 * 4);
  EXPECT_EQ(launch(function, 2, 64, {big, 64}), CUDA_SUCCESS)
      << takeLastFault();
  driver.memFree(out);
  driver.memFree(big);
}

TEST_F(GpuEmuDriverTest, Options) {
  const EmuOptions saved = emuOptions();
  setEmuOptions({7, 2, false});
  EXPECT_EQ(emuOptions().seed, 7u);
  EXPECT_EQ(emuOptions().workerThreads, 2u);
  EXPECT_FALSE(emuOptions().checkRaces);
  CUfunction function =
      load(registerModule({{"write_global_index", 2, writeGlobalIndex}}),
           "write_global_index");
  const CUdeviceptr out = allocate(64 * 4);
  EXPECT_EQ(launch(function, 2, 32, {out, 32}), CUDA_SUCCESS);
  setEmuOptions(saved);
  driver.memFree(out);
}

//===----------------------------------------------------------------------===//
// The runtime's CudaRouter on emulated kernels
//===----------------------------------------------------------------------===//

class GpuEmuRouterTest : public ::testing::Test {
protected:
  /// The example manifest with PTX only; `route` is the route kernel.
  std::unique_ptr<rt::CudaRouter> load(EmuKernelFn route) {
    nlohmann::json manifest = rttest::exampleManifest();
    manifest.erase("cubin");
    rttest::writeKernelDir(dir.path(), manifest);
    rttest::writeText(
        dir.path() + "/kernels.ptx",
        registerModule({{"route", 12, route}, {"dispatch", 9, doNothing}}));
    rt::LoadOptions options;
    options.driver = &emulatedDriver();
    return rt::CudaRouter::load(dir.path(), options);
  }

  rttest::TempDir dir;
};

TEST_F(GpuEmuRouterTest, RoutesThroughTheEmulator) {
  auto router = load(routeWritesBlockIds);
  EXPECT_STREQ(router->loadedBinaryKind(), "ptx");
  EXPECT_EQ(router->deviceMajor(), 9);
  constexpr int64_t kTokens = 10, kLayers = 2;
  rt::DeviceBuffer logits = router->allocate(kTokens * 256 * 4);
  rt::DeviceBuffer bias = router->allocate(256 * 4);
  rt::DeviceBuffer capture = router->allocate(kTokens * kLayers * 8 * 2);
  rt::DeviceBuffer ids = router->allocate(kTokens * 8 * 4);
  rt::DeviceBuffer weights = router->allocate(kTokens * 8 * 4);
  rt::RouteInputs in;
  in.numTokens = kTokens;
  in.logits = logits.get();
  in.bias = bias.get();
  in.capture = capture.get();
  in.captureLayers = kLayers;
  in.captureLayer = 1;
  rt::RouteOutputs out;
  out.topkIds = ids.get();
  out.topkWeights = weights.get();
  router->route(in, out, nullptr);
  std::vector<int32_t> written(3);
  ids.download(written.data(), written.size() * 4, nullptr);
  EXPECT_EQ(written, (std::vector<int32_t>{100, 101, 102})); // 3 blocks

  // The runtime's bounds check sees the emulator's allocations.
  rt::DeviceBuffer small = router->allocate(kTokens * 8 * 4 - 4);
  out.topkIds = small.get();
  auto [kind, message] = errorOf([&] { router->route(in, out, nullptr); });
  EXPECT_EQ(kind, Error::Kind::InvalidArgument);
  EXPECT_NE(message.find("topk_ids needs 320 bytes"), std::string::npos)
      << message;
}

TEST_F(GpuEmuRouterTest, KernelFaultEndsTheCall) {
  auto router = load(routeWritesPastTheEnd);
  constexpr int64_t kTokens = 5;
  rt::DeviceBuffer logits = router->allocate(kTokens * 256 * 4);
  rt::DeviceBuffer bias = router->allocate(256 * 4);
  rt::DeviceBuffer capture = router->allocate(kTokens * 8 * 2);
  rt::DeviceBuffer ids = router->allocate(kTokens * 8 * 4);
  rt::DeviceBuffer weights = router->allocate(kTokens * 8 * 4);
  rt::RouteInputs in;
  in.numTokens = kTokens;
  in.logits = logits.get();
  in.bias = bias.get();
  in.capture = capture.get();
  in.captureLayers = 1;
  rt::RouteOutputs out;
  out.topkIds = ids.get();
  out.topkWeights = weights.get();
  takeLastFault();
  auto [kind, message] = errorOf([&] { router->route(in, out, nullptr); });
  EXPECT_EQ(kind, Error::Kind::Driver);
  const std::string fault = takeLastFault();
  ASSERT_FALSE(fault.empty());
  EXPECT_EQ(message, "route: cuLaunchKernel(route, grid 2, block 128): "
                     "CUDA_ERROR_LAUNCH_FAILED (" +
                         fault + ")");
}

//===----------------------------------------------------------------------===//
// CudaDriver::fromEntryPoints
//===----------------------------------------------------------------------===//

void *allButLaunch(const char *symbol) {
  return std::strcmp(symbol, "cuLaunchKernel") == 0 ? nullptr
                                                    : entryPoint(symbol);
}

CUresult initWithoutDevice(unsigned) { return CUDA_ERROR_NO_DEVICE; }

void *withoutDevice(const char *symbol) {
  return std::strcmp(symbol, "cuInit") == 0
             ? reinterpret_cast<void *>(initWithoutDevice)
             : entryPoint(symbol);
}

TEST(GpuEmuFromEntryPointsTest, BuildsAWorkingDriver) {
  std::unique_ptr<CudaDriver> driver =
      CudaDriver::fromEntryPoints("in-process driver", 12040, entryPoint);
  EXPECT_EQ(driver->libraryName(), "in-process driver");
  EXPECT_EQ(driver->version(), 12040);
  EXPECT_EQ(driver->deviceCount(), 1);
  EXPECT_EQ(driver->launchKernel, emulatedDriver().launchKernel);
}

TEST(GpuEmuFromEntryPointsTest, MissingSymbolIsNoDriver) {
  auto [kind, message] = errorOf([] {
    CudaDriver::fromEntryPoints("partial driver", 12080, allButLaunch);
  });
  EXPECT_EQ(kind, Error::Kind::NoDriver);
  EXPECT_EQ(message, "no usable CUDA driver: partial driver (CUDA 12.8) does "
                     "not provide cuLaunchKernel");
  std::tie(kind, message) = errorOf(
      [] { CudaDriver::fromEntryPoints("empty driver", 12080, nullptr); });
  EXPECT_EQ(kind, Error::Kind::NoDriver);
  EXPECT_EQ(message, "no usable CUDA driver: empty driver (CUDA 12.8) does "
                     "not provide cuGetErrorName");
}

/// The emulated driver without cuMemcpyBatchAsync, as a driver older than
/// CUDA 12.8 is.
void *allButBatchCopies(const char *symbol) {
  return std::strcmp(symbol, "cuMemcpyBatchAsync") == 0 ? nullptr
                                                         : entryPoint(symbol);
}

TEST_F(GpuEmuDriverTest, BatchCopiesKeepToTheDriversRules) {
  const CUdeviceptr a = allocate(64), b = allocate(64);
  CUstream stream = nullptr;
  driver.check(driver.streamCreate(&stream, 0), "cuStreamCreate");
  std::array<CUdeviceptr, 2> to = {b, b + 32}, from = {a + 32, a};
  std::array<size_t, 2> sizes = {32, 32};
  CUmemcpyAttributes attributes{};
  attributes.srcAccessOrder = CU_MEMCPY_SRC_ACCESS_ORDER_STREAM;
  size_t first = 0, failed = 0;
  std::vector<uint8_t> host(64), back(64);
  std::iota(host.begin(), host.end(), uint8_t(0));
  driver.check(driver.memcpyHtoDAsync(a, host.data(), 64, stream), "HtoD");
  EXPECT_EQ(driver.memcpyBatchAsync(to.data(), from.data(), sizes.data(), 2,
                                    &attributes, &first, 1, &failed, stream),
            CUDA_SUCCESS);
  driver.check(driver.memcpyDtoHAsync(back.data(), b, 64, stream), "DtoH");
  EXPECT_EQ(back[0], 32);
  EXPECT_EQ(back[32], 0);
  // Not on the legacy default stream; every copy within an allocation.
  EXPECT_EQ(driver.memcpyBatchAsync(to.data(), from.data(), sizes.data(), 2,
                                    &attributes, &first, 1, &failed, nullptr),
            CUDA_ERROR_INVALID_VALUE);
  sizes[1] = 33;
  EXPECT_EQ(driver.memcpyBatchAsync(to.data(), from.data(), sizes.data(), 2,
                                    &attributes, &first, 1, &failed, stream),
            CUDA_ERROR_INVALID_VALUE);
  EXPECT_EQ(failed, 1u);
  attributes.srcAccessOrder = CU_MEMCPY_SRC_ACCESS_ORDER_INVALID;
  sizes[1] = 32;
  EXPECT_EQ(driver.memcpyBatchAsync(to.data(), from.data(), sizes.data(), 2,
                                    &attributes, &first, 1, &failed, stream),
            CUDA_ERROR_INVALID_VALUE);
  driver.streamDestroy(stream);
  driver.memFree(a);
  driver.memFree(b);
}

TEST_F(GpuEmuDriverTest, CopyRowsGathersWithAndWithoutBatchCopies) {
  // 6 rows of 12 bytes; gather rows 4, 5, 0, 2, 3, 3: runs {4, 5}, {0},
  // {2, 3}, {3}.
  const std::vector<int64_t> sourceRow = {4, 5, 0, 2, 3, 3};
  std::vector<uint8_t> host(72);
  std::iota(host.begin(), host.end(), uint8_t(0));
  std::unique_ptr<CudaDriver> older =
      CudaDriver::fromEntryPoints("older driver", 12040, allButBatchCopies);
  ASSERT_EQ(older->memcpyBatchAsync, nullptr);
  ASSERT_NE(driver.memcpyBatchAsync, nullptr);
  CUstream stream = nullptr;
  driver.check(driver.streamCreate(&stream, 0), "cuStreamCreate");
  for (const CudaDriver *copier : {&driver, static_cast<const CudaDriver *>(older.get())})
    for (CUstream on : {stream, static_cast<CUstream>(nullptr)}) {
      const CUdeviceptr from = allocate(72), to = allocate(72);
      driver.check(driver.memcpyHtoDAsync(from, host.data(), 72, nullptr),
                   "HtoD");
      rt::ep::copyRows(*copier, on, to, from, sourceRow, 12);
      std::vector<uint8_t> back(72);
      driver.check(driver.memcpyDtoHAsync(back.data(), to, 72, nullptr),
                   "DtoH");
      for (size_t i = 0; i < sourceRow.size(); ++i)
        for (size_t byte = 0; byte < 12; ++byte)
          ASSERT_EQ(back[i * 12 + byte], host[sourceRow[i] * 12 + byte])
              << copier->libraryName() << ", row " << i;
      driver.memFree(from);
      driver.memFree(to);
    }
  driver.streamDestroy(stream);
  // A bad copy is the driver's error, named.
  const CUdeviceptr small = allocate(12);
  auto [kind, message] = errorOf([&] {
    rt::ep::copyRows(driver, nullptr, small, small, sourceRow, 12);
  });
  EXPECT_EQ(kind, Error::Kind::Driver);
  EXPECT_NE(message.find("cuMemcpyDtoDAsync(rows): CUDA_ERROR_INVALID_VALUE"),
            std::string::npos)
      << message;
  driver.memFree(small);
}

TEST_F(GpuEmuDriverTest, EPWorkspaceGrowsAndIsReused) {
  rt::ep::DeviceWorkspace workspace;
  using Slot = rt::ep::DeviceWorkspace;
  EXPECT_EQ(workspace.get(Slot::Send, driver, context, 0), 0u);
  const CUdeviceptr first = workspace.get(Slot::Send, driver, context, 100);
  ASSERT_NE(first, 0u);
  EXPECT_EQ(workspace.bytesHeld(), 125u); // a quarter more than asked
  // Smaller or equal: the same buffer; larger: a new one.
  EXPECT_EQ(workspace.get(Slot::Send, driver, context, 125), first);
  EXPECT_EQ(workspace.get(Slot::Send, driver, context, 8), first);
  const CUdeviceptr second = workspace.get(Slot::Send, driver, context, 400);
  EXPECT_EQ(workspace.bytesHeld(), 500u);
  EXPECT_TRUE(rt::ep::checkDeviceBuffer(driver, 0, "send", second, 500)
                  .empty());
  // Slots are apart.
  EXPECT_NE(workspace.get(Slot::Record, driver, context, 48), second);
  EXPECT_EQ(workspace.bytesHeld(), 560u);
}

TEST_F(GpuEmuDriverTest, DeviceBuffersAreCheckedBeforeEP) {
  const CUdeviceptr pointer = allocate(16);
  EXPECT_EQ(rt::ep::checkDeviceBuffer(driver, 0, "ids", pointer, 16), "");
  EXPECT_EQ(rt::ep::checkDeviceBuffer(driver, 0, "ids", 0, 0), "");
  EXPECT_EQ(rt::ep::checkDeviceBuffer(driver, 0, "ids", 0, 4),
            "ids is required (null device pointer)");
  EXPECT_NE(rt::ep::checkDeviceBuffer(driver, 0, "ids", pointer + 8, 12)
                .find("ids needs 12 bytes from 0x"),
            std::string::npos);
  EXPECT_NE(rt::ep::checkDeviceBuffer(driver, 1, "ids", pointer, 16)
                .find("ids is on device 0, the communicator's is device 1"),
            std::string::npos);
  int onStack = 0;
  EXPECT_NE(rt::ep::checkDeviceBuffer(driver, 0, "ids",
                                      reinterpret_cast<CUdeviceptr>(&onStack),
                                      4)
                .find("is not memory the CUDA driver knows"),
            std::string::npos);
  driver.memFree(pointer);
}

TEST(GpuEmuFromEntryPointsTest, InitChecksAreShared) {
  auto [kind, message] = errorOf(
      [] { CudaDriver::fromEntryPoints("no device", 12080, withoutDevice); });
  EXPECT_EQ(kind, Error::Kind::NoDevice);
  EXPECT_EQ(message, "no CUDA device: cuInit: CUDA_ERROR_NO_DEVICE (no "
                     "CUDA-capable device is detected)");
}

} // namespace
