//===- EmuRuntime.cpp - SIMT emulation runtime for gpu.funcs ----*- C++ -*-===//
//
// See EmuRuntime.h for what is modelled. The moving parts:
//
//  * Context switching: a minimal x86-64 stack switch (callee-saved
//    registers, MXCSR and the x87 control word; no syscall), or ucontext on
//    other architectures. Stacks come from a process-wide pool, so blocks
//    and launches reuse them.
//  * BlockRunner: one per worker OS thread. It runs one block at a time: a
//    scheduler loop on the worker's own stack resumes a random runnable
//    fiber until it switches back at a synchronisation point or returns.
//    Synchronisation bookkeeping happens in the fiber, in the runtime call;
//    the last thread to arrive releases the others.
//  * Race detection: shadow state per shared byte. Two accesses are ordered
//    when a barrier separates them (barrier epochs) or, within a warp, a
//    warp sync containing both does (per-warp vector clocks in units of the
//    warp's sync count; a sync of all lanes is O(1)).
//
// A fault is recorded as the launch's message (the first one wins) and the
// faulting fiber switches to the scheduler for good. Fibers are abandoned,
// never unwound, so the runtime holds no object with a destructor on a fiber
// stack across a switch.
//
//===----------------------------------------------------------------------===//

#include "compiler/backend/gpuemu/EmuRuntime.h"

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <sched.h>
#include <system_error>
#include <sys/mman.h>
#include <thread>
#include <unistd.h>

#if defined(__x86_64__) && !defined(MOEGEN_GPUEMU_USE_UCONTEXT)
#define MOEGEN_GPUEMU_ASM_SWITCH 1
#else
#include <ucontext.h>
#endif

// Under AddressSanitizer every stack switch is announced, so that ASan knows
// which stack is live (its reports and its fake stacks follow the fiber),
// and a reused fiber stack is unpoisoned before a fiber starts on it: the
// redzones of the frames an abandoned fiber left behind are gone.
#if defined(MOEGEN_ADDRESS_SANITIZER) || defined(__SANITIZE_ADDRESS__)
#define MOEGEN_GPUEMU_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define MOEGEN_GPUEMU_ASAN 1
#endif
#endif
#ifdef MOEGEN_GPUEMU_ASAN
#include <pthread.h>
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#endif

using namespace moegen::gpuemu;

namespace {

constexpr int64_t kWarpSize = 32;
/// The PTX limit; thread numbers fit 16 bits in the shadow state.
constexpr int64_t kMaxBlockDim = 1024;
constexpr size_t kStackBytes = 256 * 1024;
/// Stacks kept for reuse after a launch (virtual memory only, mostly).
constexpr size_t kMaxCachedStacks = 4096;
/// Consecutive yields with no other progress anywhere that make a livelock.
constexpr uint64_t kLivelockYields = 10'000'000;
/// How often a spinning block looks at the other workers' progress.
constexpr uint64_t kProgressPollYields = 1 << 16;

//===----------------------------------------------------------------------===//
// Context switching
//===----------------------------------------------------------------------===//

using FiberEntry = void (*)(void *);

#ifdef MOEGEN_GPUEMU_ASM_SWITCH
struct MachineContext {
  void *stackPointer = nullptr;
  /// The stack's extent, for AddressSanitizer's fiber annotations.
  const void *stackBottom = nullptr;
  size_t stackSize = 0;
};
} // namespace

// Saves the callee-saved state on the current stack, stores the stack
// pointer to *save and resumes the stack `load` (saved the same way or
// prepared by prepareContext).
extern "C" void moegenGpuEmuSwitchStack(void **save, void *load);
// First frame of a fiber: calls r13(r12) and never returns.
extern "C" void moegenGpuEmuFiberStart();
asm(R"(
  .text
  .p2align 4
  .globl moegenGpuEmuSwitchStack
  .hidden moegenGpuEmuSwitchStack
  .type moegenGpuEmuSwitchStack,@function
moegenGpuEmuSwitchStack:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  subq $8, %rsp
  stmxcsr (%rsp)
  fnstcw 4(%rsp)
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  ldmxcsr (%rsp)
  fldcw 4(%rsp)
  addq $8, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size moegenGpuEmuSwitchStack, .-moegenGpuEmuSwitchStack

  .p2align 4
  .globl moegenGpuEmuFiberStart
  .hidden moegenGpuEmuFiberStart
  .type moegenGpuEmuFiberStart,@function
moegenGpuEmuFiberStart:
  movq %r12, %rdi
  callq *%r13
  ud2
  .size moegenGpuEmuFiberStart, .-moegenGpuEmuFiberStart
)");
namespace {

void prepareContext(MachineContext &context, void *stackLow, size_t bytes,
                    FiberEntry entry, void *argument) {
#ifdef MOEGEN_GPUEMU_ASAN
  // Before anything is written to it. The function, not
  // ASAN_UNPOISON_MEMORY_REGION: the sanitizer job hides
  // __SANITIZE_ADDRESS__, which turns that macro into nothing.
  __asan_unpoison_memory_region(stackLow, bytes);
#endif
  // The frame moegenGpuEmuSwitchStack pops: MXCSR/x87 control word, r15,
  // r14, r13, r12, rbx, rbp, return address; after the `ret` the stack
  // pointer is 16-byte aligned, as the call in FiberStart needs.
  auto top = (reinterpret_cast<uintptr_t>(stackLow) + bytes) & ~uintptr_t(15);
  auto *frame = reinterpret_cast<uint64_t *>(top - 16 - 64);
  frame[0] = 0x1F80 | (uint64_t(0x037F) << 32);    // default MXCSR, x87 CW
  frame[1] = 0;                                    // r15
  frame[2] = 0;                                    // r14
  frame[3] = reinterpret_cast<uint64_t>(entry);    // r13
  frame[4] = reinterpret_cast<uint64_t>(argument); // r12
  frame[5] = 0;                                    // rbx
  frame[6] = 0;                                    // rbp
  frame[7] = reinterpret_cast<uint64_t>(&moegenGpuEmuFiberStart);
  context.stackPointer = frame;
  context.stackBottom = stackLow;
  context.stackSize = bytes;
}

/// Suspends `from` and resumes `to`; returns when `from` is resumed. A
/// fiber `leaving` for good never is.
inline void switchContext(MachineContext &from, MachineContext &to,
                          bool leaving = false) {
#ifdef MOEGEN_GPUEMU_ASAN
  void *fakeStack = nullptr;
  __sanitizer_start_switch_fiber(leaving ? nullptr : &fakeStack,
                                 to.stackBottom, to.stackSize);
  moegenGpuEmuSwitchStack(&from.stackPointer, to.stackPointer);
  __sanitizer_finish_switch_fiber(fakeStack, nullptr, nullptr);
#else
  (void)leaving;
  moegenGpuEmuSwitchStack(&from.stackPointer, to.stackPointer);
#endif
}

/// The first thing a new fiber does: completes the switch that started it.
inline void enterFiber() {
#ifdef MOEGEN_GPUEMU_ASAN
  __sanitizer_finish_switch_fiber(nullptr, nullptr, nullptr);
#endif
}

/// Records the calling OS thread's stack as `context`'s (the scheduler's).
inline void describeThreadStack(MachineContext &context) {
#ifdef MOEGEN_GPUEMU_ASAN
  pthread_attr_t attributes;
  if (pthread_getattr_np(pthread_self(), &attributes) == 0) {
    void *bottom = nullptr;
    size_t size = 0;
    if (pthread_attr_getstack(&attributes, &bottom, &size) == 0) {
      context.stackBottom = bottom;
      context.stackSize = size;
    }
    pthread_attr_destroy(&attributes);
  }
#else
  (void)context;
#endif
}
#else
struct MachineContext {
  ucontext_t context;
};

void ucontextEntry(unsigned high, unsigned low, unsigned entryHigh,
                   unsigned entryLow) {
  auto argument = reinterpret_cast<void *>((uintptr_t(high) << 32) | low);
  auto entry =
      reinterpret_cast<FiberEntry>((uintptr_t(entryHigh) << 32) | entryLow);
  entry(argument);
}

void prepareContext(MachineContext &context, void *stackLow, size_t bytes,
                    FiberEntry entry, void *argument) {
  getcontext(&context.context);
  context.context.uc_stack.ss_sp = stackLow;
  context.context.uc_stack.ss_size = bytes;
  context.context.uc_link = nullptr;
  auto argumentBits = reinterpret_cast<uintptr_t>(argument);
  auto entryBits = reinterpret_cast<uintptr_t>(entry);
  makecontext(&context.context, reinterpret_cast<void (*)()>(&ucontextEntry), 4,
              unsigned(uint64_t(argumentBits) >> 32), unsigned(argumentBits),
              unsigned(uint64_t(entryBits) >> 32), unsigned(entryBits));
}

inline void switchContext(MachineContext &from, MachineContext &to,
                          bool /*leaving*/ = false) {
  swapcontext(&from.context, &to.context);
}
inline void enterFiber() {}
inline void describeThreadStack(MachineContext &) {}
#endif

//===----------------------------------------------------------------------===//
// Fiber stacks
//===----------------------------------------------------------------------===//

/// mmap'd stacks with a guard page below, shared by all launches.
class StackPool {
public:
  static StackPool &instance() {
    static StackPool pool;
    return pool;
  }

  ~StackPool() {
    for (void *stack : freeStacks)
      munmap(static_cast<char *>(stack) - guardBytes, kStackBytes + guardBytes);
  }

  /// The lowest usable address of a kStackBytes stack, or nullptr.
  void *acquire() {
    {
      std::lock_guard<std::mutex> lock(mutex);
      if (!freeStacks.empty()) {
        void *stack = freeStacks.back();
        freeStacks.pop_back();
        return stack;
      }
    }
    void *mapping = mmap(nullptr, kStackBytes + guardBytes, PROT_NONE,
                         MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (mapping == MAP_FAILED)
      return nullptr;
    char *stack = static_cast<char *>(mapping) + guardBytes;
    if (mprotect(stack, kStackBytes, PROT_READ | PROT_WRITE) != 0) {
      munmap(mapping, kStackBytes + guardBytes);
      return nullptr;
    }
    return stack;
  }

  void release(void *stack) {
    {
      std::lock_guard<std::mutex> lock(mutex);
      if (freeStacks.size() < kMaxCachedStacks) {
        freeStacks.push_back(stack);
        return;
      }
    }
    munmap(static_cast<char *>(stack) - guardBytes, kStackBytes + guardBytes);
  }

private:
  StackPool() : guardBytes(size_t(sysconf(_SC_PAGESIZE))) {}

  size_t guardBytes;
  std::mutex mutex;
  std::vector<void *> freeStacks;
};

//===----------------------------------------------------------------------===//
// Launch, block and fiber state
//===----------------------------------------------------------------------===//

/// splitmix64: small, fast and good enough to shuffle schedules.
struct Random {
  uint64_t state;
  explicit Random(uint64_t seed) : state(seed) {}
  uint64_t next() {
    uint64_t z = (state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  /// Uniform in [0, bound).
  size_t below(size_t bound) {
    return size_t((unsigned __int128)next() * bound >> 64);
  }
};

std::string hexAddress(uintptr_t address) {
  char text[32];
  std::snprintf(text, sizeof(text), "0x%" PRIxPTR, address);
  return text;
}

/// "0-31", "0, 2-5, 9": a sorted list of numbers, at most a few ranges.
std::string describeRanges(const std::vector<int64_t> &sorted) {
  std::string text;
  size_t ranges = 0;
  for (size_t i = 0; i < sorted.size();) {
    size_t j = i;
    while (j + 1 < sorted.size() && sorted[j + 1] == sorted[j] + 1)
      ++j;
    if (ranges == 8) {
      text += ", ...";
      break;
    }
    if (!text.empty())
      text += ", ";
    text += std::to_string(sorted[i]);
    if (j > i) {
      // Appended in two steps: GCC 12 warns (-Wrestrict) on "-" + string.
      text += '-';
      text += std::to_string(sorted[j]);
    }
    ++ranges;
    i = j + 1;
  }
  return text;
}

std::string describeLanes(uint32_t mask) {
  std::vector<int64_t> lanes;
  for (int64_t lane = 0; lane < kWarpSize; ++lane)
    if (mask & (1u << lane))
      lanes.push_back(lane);
  return describeRanges(lanes);
}

/// What the launch's workers share.
struct Launch {
  const LaunchConfig &config;
  EmuKernelFn kernel;
  const std::vector<uint64_t> &params;
  std::atomic<bool> stop{false};
  std::mutex faultMutex;
  std::string fault;
  /// Per worker, bumped whenever its block makes progress other than a
  /// yield; a spinning block reads the others' to tell waiting from
  /// livelock.
  struct alignas(64) ProgressCounter {
    std::atomic<uint64_t> events{0};
  };
  std::unique_ptr<ProgressCounter[]> progress;
  unsigned workers = 1;

  Launch(const LaunchConfig &config, EmuKernelFn kernel,
         const std::vector<uint64_t> &params)
      : config(config), kernel(kernel), params(params) {}

  void reportFault(std::string message) {
    {
      std::lock_guard<std::mutex> lock(faultMutex);
      if (fault.empty())
        fault = std::move(message);
    }
    stop.store(true, std::memory_order_relaxed);
  }

  std::string formatFault(int64_t block, int64_t thread,
                          const std::string &what) const {
    std::string seed = std::to_string(config.seed);
    return "gpu-emu: kernel '" + config.kernel + "' block " +
           std::to_string(block) + " thread " + std::to_string(thread) +
           " (warp " + std::to_string(thread / kWarpSize) + ", lane " +
           std::to_string(thread % kWarpSize) + "): " + what + " (seed " +
           seed + "; MOEGEN_EMU_SEED=" + seed + " reproduces it)";
  }
};

class BlockRunner;

/// Fiber::collectiveKind of a shuffle and of a match.any (a redux has its
/// ReduxKind).
constexpr int32_t kShuffleCollective = -1;
constexpr int32_t kMatchAnyCollective = -2;

enum class FiberState : uint8_t {
  Runnable,
  AtShuffle,
  AtWarpSync,
  AtBarrier,
  Returned,
};

struct Fiber {
  MachineContext context;
  BlockRunner *runner = nullptr;
  void *stack = nullptr;
  FiberState state = FiberState::Runnable;
  int32_t thread = 0, warp = 0, lane = 0;
  // The kernel's trailing arguments and the packed argument array.
  int64_t blockIdx = 0, threadIdx = 0;
  void *self = nullptr;
  std::vector<void *> args;
  // Shuffle and redux operands and result.
  int32_t shuffleValue = 0, shuffleOffset = 0, shuffleWidth = 0;
  int32_t shuffleResult = 0;
  int32_t collectiveKind = 0;
  uint32_t collectiveMask = 0;
  /// The member mask this lane waits with at a warp sync.
  uint32_t warpSyncMask = 0;
  /// Warp syncs this lane took part in, and the members of the latest (the
  /// whole warp before the first): lanes with equal counts that were in
  /// each other's latest sync run between the same two syncs.
  uint32_t laneSyncs = 0;
  uint32_t lastSyncMembers = ~0u;
  /// Vector clock over the lanes of its warp, in units of the warp's sync
  /// count: clock[r] > g means that lane r's accesses made while the warp's
  /// count was g are ordered before this lane's next ones. The effective
  /// value is max(clock[r], Warp::fullSyncCount).
  uint32_t clock[kWarpSize] = {};
};

struct Warp {
  /// Lanes that exist (a partial last warp has fewer).
  uint32_t laneMask = 0;
  int32_t laneCount = 0;
  uint32_t returnedMask = 0;
  uint32_t shuffleMask = 0;
  uint32_t warpSyncMask = 0;
  /// Warp syncs completed so far in this block, and the latest of them that
  /// all lanes took part in.
  uint32_t syncCount = 0;
  uint32_t fullSyncCount = 0;
};

/// Race-detection state of one shared byte. Accesses are recorded with the
/// barrier epoch they were made in; an older epoch means "ordered".
struct ShadowByte {
  uint32_t writeEpoch = 0;
  uint32_t writeSync = 0;
  uint32_t writeLaneSyncs = 0; // the writer's Fiber::laneSyncs
  uint32_t readEpoch = 0;
  uint32_t readSync = 0; // the largest warp sync count among the reads
  uint32_t readerLanes = 0;
  uint16_t writer = 0;
  uint16_t readerWarp = 0; // kSeveralWarps: readers in more than one warp
  uint16_t lastReader = 0;
  uint16_t otherReader = 0; // an earlier reader, for messages
  uint8_t writeWasAtomic = 0;
  int32_t writeSite = -1; // the store instruction of the last write
};
constexpr uint16_t kSeveralWarps = 0xFFFF;

/// Runs the blocks a worker draws, one at a time, as fibers.
class BlockRunner {
public:
  BlockRunner(Launch &launch, unsigned worker);
  ~BlockRunner();

  /// False when stacks could not be allocated (the launch has a message).
  bool ready() const { return isReady; }
  void runBlock(int64_t blockIdx);

  // Runtime calls, made on the calling fiber's stack.
  int32_t shuffleXor(Fiber &fiber, int32_t value, int32_t offset,
                     int32_t width, uint32_t mask);
  int32_t redux(Fiber &fiber, int32_t value, int32_t kind, uint32_t mask);
  int32_t matchAny(Fiber &fiber, int32_t value, uint32_t mask) {
    return collective(fiber, value, kMatchAnyCollective, mask);
  }
  void warpSync(Fiber &fiber, uint32_t mask);
  void barrier(Fiber &fiber);
  void yield(Fiber &fiber);
  void checkAccess(Fiber &fiber, const void *address, int64_t bytes,
                   int32_t kind, bool isShared, int32_t site);
  void *sharedBase() const { return shared; }
  int64_t gridDim() const { return launch.config.gridDim; }
  int64_t sharedBytes() const { return launch.config.sharedBytes; }

  static void fiberMain(void *fiber);

private:
  /// A warp-collective op over the lanes of `mask` (a shuffle, or a redux
  /// of kind `kind`): waits for every member, checks that they agree, and
  /// returns this lane's result.
  int32_t collective(Fiber &fiber, int32_t value, int32_t kind, uint32_t mask);
  /// Records a fault named after `thread` and stops the block.
  void recordFault(int64_t thread, const std::string &what);
  /// Leaves the fiber for good. Nothing with a destructor may be alive on
  /// its stack.
  [[noreturn]] void abandon(Fiber &fiber);
  /// Hands over to a random runnable fiber (possibly `fiber` itself), or to
  /// the scheduler loop when none is left or the block must stop; returns
  /// when `fiber` is resumed. Switching fiber to fiber directly halves the
  /// switches of a round of synchronisation.
  void suspend(Fiber &fiber, bool leaving = false) {
    if (Fiber *next = pickNext()) {
      if (next != &fiber)
        switchContext(fiber.context, next->context, leaving);
      return;
    }
    switchContext(fiber.context, scheduler, leaving);
  }
  /// The next fiber to run, drawn at random; nullptr when none is runnable
  /// or the block must stop.
  Fiber *pickNext() {
    if (runQueue.empty() || blockFaulted ||
        launch.stop.load(std::memory_order_relaxed))
      return nullptr;
    size_t pick = random.below(runQueue.size());
    Fiber *next = runQueue[pick];
    runQueue[pick] = runQueue.back();
    runQueue.pop_back();
    return next;
  }
  void makeRunnable(Fiber &fiber) {
    fiber.state = FiberState::Runnable;
    runQueue.push_back(&fiber);
  }
  void noteProgress() {
    yieldsWithoutProgress = 0;
    auto &events = launch.progress[worker].events;
    events.store(events.load(std::memory_order_relaxed) + 1,
                 std::memory_order_relaxed);
  }
  uint64_t othersProgress() const;
  void onReturn(Fiber &fiber);
  std::string describeDeadlock(int64_t &namedThread) const;
  std::string describeReturnedThreads() const;
  std::string describeAccess(uintptr_t address, int64_t bytes, int32_t kind,
                             bool isShared) const;
  uint32_t clockOf(const Fiber &fiber, int32_t lane) const {
    return std::max(fiber.clock[lane], warps[fiber.warp].fullSyncCount);
  }
  /// Whether `thread`'s access made at warp sync count `sync` is ordered
  /// before `fiber`'s current point (same barrier epoch assumed).
  bool isOrderedBefore(int64_t thread, uint32_t sync,
                       const Fiber &fiber) const {
    return thread / kWarpSize == fiber.warp &&
           clockOf(fiber, int32_t(thread % kWarpSize)) > sync;
  }
  void checkRace(Fiber &fiber, int64_t offset, int64_t bytes, int32_t kind,
                 int32_t site);

  Launch &launch;
  const LaunchConfig &config;
  unsigned worker;
  bool isReady = false;
  int64_t currentBlock = 0;
  MachineContext scheduler;
  std::vector<Fiber> fibers;
  std::vector<Warp> warps;
  std::vector<Fiber *> runQueue;
  Random random{0};
  bool blockFaulted = false;
  int64_t barrierArrivals = 0;
  int64_t returnedThreads = 0;
  uint64_t yieldsWithoutProgress = 0;
  uint64_t lastOthersProgress = 0;
  char *shared = nullptr;
  /// Barrier epoch: new for every block and every barrier of this worker.
  uint32_t epoch = 0;
  std::unique_ptr<ShadowByte[]> shadow;
};

BlockRunner::BlockRunner(Launch &launch, unsigned worker)
    : launch(launch), config(launch.config), worker(worker) {
  size_t sharedAllocation =
      (std::max<size_t>(size_t(config.sharedBytes), 16) + 255) & ~size_t(255);
  shared = static_cast<char *>(std::aligned_alloc(256, sharedAllocation));
  if (config.checkRaces && config.sharedBytes > 0)
    shadow.reset(new ShadowByte[size_t(config.sharedBytes)]);
  fibers.resize(size_t(config.blockDim));
  warps.resize(size_t((config.blockDim + kWarpSize - 1) / kWarpSize));
  runQueue.reserve(fibers.size());
  describeThreadStack(scheduler);
  size_t parameters = launch.params.size();
  for (size_t i = 0; i < fibers.size(); ++i) {
    Fiber &fiber = fibers[i];
    fiber.runner = this;
    fiber.thread = int32_t(i);
    fiber.warp = int32_t(i / kWarpSize);
    fiber.lane = int32_t(i % kWarpSize);
    fiber.threadIdx = int64_t(i);
    fiber.self = &fiber;
    fiber.args.resize(parameters + 3);
    for (size_t p = 0; p < parameters; ++p)
      fiber.args[p] = const_cast<uint64_t *>(&launch.params[p]);
    fiber.args[parameters] = &fiber.blockIdx;
    fiber.args[parameters + 1] = &fiber.threadIdx;
    fiber.args[parameters + 2] = &fiber.self;
    fiber.stack = StackPool::instance().acquire();
    if (!fiber.stack) {
      launch.reportFault("gpu-emu: kernel '" + config.kernel +
                         "': cannot allocate fiber stacks (" +
                         std::strerror(errno) + ")");
      return;
    }
  }
  if (!shared) {
    launch.reportFault("gpu-emu: kernel '" + config.kernel +
                       "': cannot allocate " +
                       std::to_string(sharedAllocation) +
                       " bytes of shared memory");
    return;
  }
  isReady = true;
}

BlockRunner::~BlockRunner() {
  for (Fiber &fiber : fibers)
    if (fiber.stack)
      StackPool::instance().release(fiber.stack);
  std::free(shared);
}

void BlockRunner::fiberMain(void *argument) {
  enterFiber();
  auto &fiber = *static_cast<Fiber *>(argument);
  fiber.runner->launch.kernel(fiber.args.data());
  fiber.runner->onReturn(fiber);
  fiber.runner->abandon(fiber);
}

void BlockRunner::runBlock(int64_t blockIdx) {
  currentBlock = blockIdx;
  random = Random(config.seed ^ (uint64_t(blockIdx) * 0xD6E8FEB86659FD93ull));
  blockFaulted = false;
  barrierArrivals = 0;
  returnedThreads = 0;
  yieldsWithoutProgress = 0;
  ++epoch;
  // Shared memory starts with a per-block pattern, not zeros: a kernel that
  // reads it before writing it should not pass by luck.
  std::memset(shared, int(0xA5 ^ (random.next() & 0x5A)),
              size_t(std::max<int64_t>(config.sharedBytes, 0)));
  for (size_t w = 0; w < warps.size(); ++w) {
    Warp &warp = warps[w];
    warp = Warp();
    warp.laneCount = int32_t(
        std::min<int64_t>(kWarpSize, config.blockDim - int64_t(w) * kWarpSize));
    warp.laneMask = warp.laneCount == 32 ? ~0u : ((1u << warp.laneCount) - 1);
  }
  runQueue.clear();
  for (Fiber &fiber : fibers) {
    fiber.blockIdx = blockIdx;
    std::fill(std::begin(fiber.clock), std::end(fiber.clock), 0u);
    fiber.laneSyncs = 0;
    fiber.lastSyncMembers = ~0u;
    // Stagger the stack tops: stacks lie a multiple of the page size apart,
    // so unstaggered the fibers' hot frames would all compete for the same
    // few L1 cache sets.
    size_t stagger = size_t(fiber.thread % 61) * 64;
    prepareContext(fiber.context, fiber.stack, kStackBytes - stagger,
                   &BlockRunner::fiberMain, &fiber);
    makeRunnable(fiber);
  }

  // Fibers switch among themselves; control comes back here only when none
  // is runnable or the block must stop.
  while (Fiber *fiber = pickNext())
    switchContext(scheduler, fiber->context);
  if (blockFaulted || launch.stop.load(std::memory_order_relaxed) ||
      returnedThreads == config.blockDim)
    return;
  int64_t namedThread = 0;
  std::string what = describeDeadlock(namedThread);
  recordFault(namedThread, what);
}

void BlockRunner::recordFault(int64_t thread, const std::string &what) {
  blockFaulted = true;
  launch.reportFault(launch.formatFault(currentBlock, thread, what));
}

void BlockRunner::abandon(Fiber &fiber) {
  // A returned or faulted fiber is in no queue: it never comes back.
  suspend(fiber, /*leaving=*/true);
  __builtin_unreachable();
}

uint64_t BlockRunner::othersProgress() const {
  uint64_t sum = 0;
  for (unsigned w = 0; w < launch.workers; ++w)
    if (w != worker)
      sum += launch.progress[w].events.load(std::memory_order_relaxed);
  return sum;
}

//===----------------------------------------------------------------------===//
// Synchronisation
//===----------------------------------------------------------------------===//

int32_t BlockRunner::shuffleXor(Fiber &fiber, int32_t value, int32_t offset,
                                int32_t width, uint32_t mask) {
  if (width < 1 || width > kWarpSize || (width & (width - 1)) != 0) {
    recordFault(fiber.thread, "shuffle width " + std::to_string(width) +
                                  " is not a power of two in [1, 32]");
    abandon(fiber);
  }
  fiber.shuffleOffset = offset;
  fiber.shuffleWidth = width;
  return collective(fiber, value, kShuffleCollective, mask);
}

int32_t BlockRunner::redux(Fiber &fiber, int32_t value, int32_t kind,
                           uint32_t mask) {
  if (kind < 0 || kind > kReduxUMin) {
    recordFault(fiber.thread,
                "redux kind " + std::to_string(kind) + " is not emulated");
    abandon(fiber);
  }
  return collective(fiber, value, kind, mask);
}

int32_t BlockRunner::collective(Fiber &fiber, int32_t value, int32_t kind,
                                uint32_t mask) {
  Warp &warp = warps[fiber.warp];
  const char *what = kind == kShuffleCollective    ? "shuffle"
                     : kind == kMatchAnyCollective ? "match"
                                                   : "redux";
  uint32_t members = mask & warp.laneMask;
  uint32_t self = 1u << fiber.lane;
  if (!(members & self)) {
    recordFault(fiber.thread, std::string(what) + " with mask " +
                                  hexAddress(mask) + ", which excludes lane " +
                                  std::to_string(fiber.lane) + " itself");
    abandon(fiber);
  }
  if (members & warp.returnedMask) {
    recordFault(fiber.thread, std::string(what) + " by lane " +
                                  std::to_string(fiber.lane) + " while lanes " +
                                  describeLanes(members & warp.returnedMask) +
                                  " of its member mask have returned");
    abandon(fiber);
  }
  fiber.shuffleValue = value;
  fiber.collectiveKind = kind;
  fiber.collectiveMask = members;
  fiber.state = FiberState::AtShuffle;
  warp.shuffleMask |= self;
  noteProgress();
  if ((warp.shuffleMask & members) == members) {
    // Every member is here. They must agree on the op and the mask (PTX
    // leaves anything else undefined); then exchange and release.
    Fiber *lanes = &fibers[size_t(fiber.warp) * kWarpSize];
    for (int32_t lane = 0; lane < warp.laneCount; ++lane) {
      Fiber &other = lanes[lane];
      if (!(members & (1u << lane)))
        continue;
      if (other.collectiveMask != members || other.collectiveKind != kind) {
        recordFault(fiber.thread,
                    "lanes of one " + std::string(what) +
                        " disagree: lane " + std::to_string(fiber.lane) +
                        " has mask " + hexAddress(members) + ", lane " +
                        std::to_string(lane) + " has mask " +
                        hexAddress(other.collectiveMask) +
                        (other.collectiveKind != kind ? " and another op"
                                                      : ""));
        abandon(fiber);
      }
    }
    if (kind == kShuffleCollective) {
      // shfl.sync.bfly: a source lane outside the segment or the warp
      // leaves the lane its own value; one outside the member mask is
      // undefined.
      for (int32_t lane = 0; lane < warp.laneCount; ++lane) {
        if (!(members & (1u << lane)))
          continue;
        Fiber &target = lanes[lane];
        uint32_t source = uint32_t(lane) ^ uint32_t(target.shuffleOffset);
        uint32_t segment = ~uint32_t(target.shuffleWidth - 1);
        bool inSegment = source < uint32_t(warp.laneCount) &&
                         (source & segment) == (uint32_t(lane) & segment);
        if (inSegment && !(members & (1u << source))) {
          recordFault(target.thread,
                      "shuffle reads lane " + std::to_string(source) +
                          ", outside its member mask " + hexAddress(members));
          abandon(fiber);
        }
        target.shuffleResult =
            inSegment ? lanes[source].shuffleValue : target.shuffleValue;
      }
    } else if (kind == kMatchAnyCollective) {
      // match.any.sync: the members holding the same value as each lane.
      for (int32_t lane = 0; lane < warp.laneCount; ++lane) {
        if (!(members & (1u << lane)))
          continue;
        uint32_t same = 0;
        for (int32_t other = 0; other < warp.laneCount; ++other)
          if ((members & (1u << other)) &&
              lanes[other].shuffleValue == lanes[lane].shuffleValue)
            same |= 1u << other;
        lanes[lane].shuffleResult = int32_t(same);
      }
    } else {
      int32_t first = __builtin_ctz(members);
      int64_t result = lanes[first].shuffleValue;
      for (int32_t lane = first + 1; lane < warp.laneCount; ++lane) {
        if (!(members & (1u << lane)))
          continue;
        int32_t v = lanes[lane].shuffleValue;
        switch (kind) {
        case kReduxAdd:
          result = int32_t(uint32_t(result) + uint32_t(v));
          break;
        case kReduxAnd:
          result &= v;
          break;
        case kReduxOr:
          result |= v;
          break;
        case kReduxXor:
          result ^= v;
          break;
        case kReduxMax:
          result = std::max<int32_t>(int32_t(result), v);
          break;
        case kReduxMin:
          result = std::min<int32_t>(int32_t(result), v);
          break;
        case kReduxUMax:
          result = std::max<uint32_t>(uint32_t(result), uint32_t(v));
          break;
        case kReduxUMin:
          result = std::min<uint32_t>(uint32_t(result), uint32_t(v));
          break;
        }
      }
      for (int32_t lane = 0; lane < warp.laneCount; ++lane)
        if (members & (1u << lane))
          lanes[lane].shuffleResult = int32_t(result);
    }
    warp.shuffleMask &= ~members;
    for (int32_t lane = 0; lane < warp.laneCount; ++lane)
      if (members & (1u << lane))
        makeRunnable(lanes[lane]);
  }
  suspend(fiber);
  return fiber.shuffleResult;
}

void BlockRunner::warpSync(Fiber &fiber, uint32_t mask) {
  Warp &warp = warps[fiber.warp];
  uint32_t members = mask & warp.laneMask;
  uint32_t self = 1u << fiber.lane;
  if (!(members & self)) {
    recordFault(fiber.thread, "warp sync with mask " + hexAddress(mask) +
                                  ", which excludes lane " +
                                  std::to_string(fiber.lane) + " itself");
    abandon(fiber);
  }
  if (members & warp.returnedMask) {
    recordFault(fiber.thread, "warp sync (mask " + hexAddress(mask) +
                                  ") not reached by lanes " +
                                  describeLanes(members & warp.returnedMask) +
                                  ", which have returned");
    abandon(fiber);
  }
  fiber.state = FiberState::AtWarpSync;
  fiber.warpSyncMask = members;
  warp.warpSyncMask |= self;
  noteProgress();
  if ((warp.warpSyncMask & members) == members) {
    Fiber *lanes = &fibers[size_t(fiber.warp) * kWarpSize];
    for (int32_t lane = 0; lane < warp.laneCount; ++lane)
      if ((members & (1u << lane)) && lanes[lane].warpSyncMask != members) {
        recordFault(fiber.thread,
                    "lanes of one warp sync disagree on its mask: lane " +
                        std::to_string(fiber.lane) + " has " +
                        hexAddress(members) + ", lane " + std::to_string(lane) +
                        " has " + hexAddress(lanes[lane].warpSyncMask));
        abandon(fiber);
      }
    // Order the members' shared-memory accesses: each member learns what
    // every member has seen.
    ++warp.syncCount;
    if (members == warp.laneMask) {
      warp.fullSyncCount = warp.syncCount;
    } else if (config.checkRaces) {
      uint32_t merged[kWarpSize];
      for (int32_t r = 0; r < kWarpSize; ++r)
        merged[r] = warp.fullSyncCount;
      for (int32_t lane = 0; lane < warp.laneCount; ++lane)
        if (members & (1u << lane))
          for (int32_t r = 0; r < kWarpSize; ++r)
            merged[r] = std::max(merged[r], lanes[lane].clock[r]);
      for (int32_t lane = 0; lane < warp.laneCount; ++lane)
        if (members & (1u << lane))
          merged[lane] = warp.syncCount;
      for (int32_t lane = 0; lane < warp.laneCount; ++lane)
        if (members & (1u << lane))
          std::copy(std::begin(merged), std::end(merged), lanes[lane].clock);
    }
    warp.warpSyncMask &= ~members;
    for (int32_t lane = 0; lane < warp.laneCount; ++lane)
      if (members & (1u << lane)) {
        ++lanes[lane].laneSyncs;
        lanes[lane].lastSyncMembers = members;
        makeRunnable(lanes[lane]);
      }
  }
  suspend(fiber);
}

std::string BlockRunner::describeReturnedThreads() const {
  std::vector<int64_t> returned;
  for (const Fiber &other : fibers)
    if (other.state == FiberState::Returned)
      returned.push_back(other.thread);
  return describeRanges(returned);
}

void BlockRunner::barrier(Fiber &fiber) {
  if (returnedThreads > 0) {
    recordFault(fiber.thread, "barrier not reached by threads " +
                                  describeReturnedThreads() +
                                  ", which have returned");
    abandon(fiber);
  }
  fiber.state = FiberState::AtBarrier;
  ++barrierArrivals;
  noteProgress();
  if (barrierArrivals == config.blockDim) {
    barrierArrivals = 0;
    ++epoch; // accesses before the barrier are ordered before those after
    for (Fiber &other : fibers)
      makeRunnable(other);
  }
  suspend(fiber);
}

void BlockRunner::yield(Fiber &fiber) {
  makeRunnable(fiber);
  if (++yieldsWithoutProgress % kProgressPollYields == 0) {
    // Spinning; fine while another worker's block moves (it may hold the
    // lock), a livelock when nothing moves anywhere for long.
    uint64_t others = othersProgress();
    if (others != lastOthersProgress) {
      lastOthersProgress = others;
      yieldsWithoutProgress = 0;
    } else if (yieldsWithoutProgress >= kLivelockYields) {
      runQueue.pop_back();
      recordFault(fiber.thread,
                  "livelock: " + std::to_string(kLivelockYields) +
                      " yields after atomics (a spin loop?) with no "
                      "thread of the grid making other progress");
      abandon(fiber);
    }
    if (launch.workers > 1)
      sched_yield();
  }
  suspend(fiber);
}

void BlockRunner::onReturn(Fiber &fiber) {
  Warp &warp = warps[fiber.warp];
  uint32_t self = 1u << fiber.lane;
  fiber.state = FiberState::Returned;
  warp.returnedMask |= self;
  ++returnedThreads;
  noteProgress();
  Fiber *lanes = &fibers[size_t(fiber.warp) * kWarpSize];
  // Name the fault after the lowest waiting thread, as when a waiter
  // arrives after the return.
  for (int32_t lane = 0; lane < warp.laneCount; ++lane)
    if ((warp.shuffleMask & (1u << lane)) &&
        (lanes[lane].collectiveMask & self)) {
      recordFault(lanes[lane].thread,
                  "shuffle by lanes " +
                      describeLanes(warp.shuffleMask &
                                    lanes[lane].collectiveMask) +
                      " while lanes " + describeLanes(warp.returnedMask) +
                      " of the warp have returned");
      return;
    }
  for (int32_t lane = 0; lane < warp.laneCount; ++lane)
    if ((warp.warpSyncMask & (1u << lane)) &&
        (lanes[lane].warpSyncMask & self)) {
      recordFault(lanes[lane].thread,
                  "warp sync (mask " + hexAddress(lanes[lane].warpSyncMask) +
                      ") not reached by lane " + std::to_string(fiber.lane) +
                      ", which has returned");
      return;
    }
  if (barrierArrivals > 0) {
    for (const Fiber &other : fibers)
      if (other.state == FiberState::AtBarrier) {
        recordFault(other.thread, "barrier not reached by thread " +
                                      std::to_string(fiber.thread) +
                                      ", which has returned");
        return;
      }
  }
}

std::string BlockRunner::describeDeadlock(int64_t &namedThread) const {
  std::vector<int64_t> atShuffle, atBarrier, returned;
  // Grouped by (warp, lane mask).
  std::vector<std::pair<std::pair<int32_t, uint32_t>, std::vector<int64_t>>>
      atWarpSync;
  namedThread = -1;
  for (const Fiber &fiber : fibers) {
    if (fiber.state != FiberState::Returned && namedThread < 0)
      namedThread = fiber.thread;
    switch (fiber.state) {
    case FiberState::AtShuffle:
      atShuffle.push_back(fiber.thread);
      break;
    case FiberState::AtBarrier:
      atBarrier.push_back(fiber.thread);
      break;
    case FiberState::Returned:
      returned.push_back(fiber.thread);
      break;
    case FiberState::AtWarpSync: {
      auto key = std::make_pair(fiber.warp, fiber.warpSyncMask);
      auto found =
          std::find_if(atWarpSync.begin(), atWarpSync.end(),
                       [&](const auto &group) { return group.first == key; });
      if (found == atWarpSync.end())
        atWarpSync.push_back({key, {fiber.thread}});
      else
        found->second.push_back(fiber.thread);
      break;
    }
    case FiberState::Runnable:
      break;
    }
  }
  if (namedThread < 0)
    namedThread = 0;
  std::string what = "deadlock, no thread can proceed:";
  const char *separator = " ";
  // `what` follows "thread N wait" / "threads N-M wait": "s" or "".
  auto add = [&](const std::vector<int64_t> &threads, const std::string &verb,
                 const std::string &rest) {
    if (threads.empty())
      return;
    bool one = threads.size() == 1;
    what += separator;
    what += (one ? "thread " : "threads ") + describeRanges(threads) + " " +
            verb + (one && verb == "wait" ? "s" : "") + rest;
    separator = "; ";
  };
  add(atBarrier, "wait", " at a barrier");
  add(atShuffle, "wait", " at a shuffle");
  for (const auto &[key, threads] : atWarpSync)
    add(threads, "wait",
        " at a warp sync (warp " + std::to_string(key.first) + ", lane mask " +
            hexAddress(key.second) + ")");
  add(returned, "returned", "");
  return what;
}

//===----------------------------------------------------------------------===//
// Memory checks
//===----------------------------------------------------------------------===//

std::string BlockRunner::describeAccess(uintptr_t address, int64_t bytes,
                                        int32_t kind, bool isShared) const {
  std::string what = std::string("out-of-bounds ") +
                     (kind == 0   ? "read"
                      : kind == 1 ? "write"
                                  : "atomic") +
                     " of " + std::to_string(bytes) + " bytes at " +
                     hexAddress(address) + ": ";
  if (isShared) {
    auto offset = int64_t(address - reinterpret_cast<uintptr_t>(shared));
    return what + "shared offset " + std::to_string(offset) +
           ", shared memory holds " + std::to_string(config.sharedBytes) +
           " bytes";
  }
  what += "not in any argument";
  const MemoryRegion *nearest = nullptr;
  uintptr_t nearestDistance = UINTPTR_MAX;
  for (const MemoryRegion &region : config.regions) {
    auto base = reinterpret_cast<uintptr_t>(region.base);
    uintptr_t distance = address < base ? base - address
                         : address >= base + region.bytes
                             ? address - base - region.bytes
                             : 0;
    if (distance < nearestDistance) {
      nearestDistance = distance;
      nearest = &region;
    }
  }
  if (nearest) {
    auto base = reinterpret_cast<uintptr_t>(nearest->base);
    what += "; nearest: " + nearest->name + " [" + hexAddress(base) + ", " +
            hexAddress(base + nearest->bytes) + ")";
    if (address >= base)
      what += ", offset " + std::to_string(address - base);
    else
      what += ", " + std::to_string(base - address) + " bytes before it";
  }
  return what;
}

void BlockRunner::checkAccess(Fiber &fiber, const void *address, int64_t bytes,
                              int32_t kind, bool isShared, int32_t site) {
  if (bytes <= 0)
    return;
  auto at = reinterpret_cast<uintptr_t>(address);
  auto size = uint64_t(bytes);
  if (isShared) {
    auto base = reinterpret_cast<uintptr_t>(shared);
    auto limit = uint64_t(std::max<int64_t>(config.sharedBytes, 0));
    uint64_t offset = at - base;
    if (at >= base && offset <= limit && size <= limit - offset) {
      if (shadow)
        checkRace(fiber, int64_t(offset), bytes, kind, site);
      return;
    }
  } else {
    for (const MemoryRegion &region : config.regions) {
      auto base = reinterpret_cast<uintptr_t>(region.base);
      uint64_t offset = at - base;
      if (at >= base && offset <= region.bytes && size <= region.bytes - offset)
        return;
    }
  }
  recordFault(fiber.thread, describeAccess(at, bytes, kind, isShared));
  abandon(fiber);
}

void BlockRunner::checkRace(Fiber &fiber, int64_t offset, int64_t bytes,
                            int32_t kind, int32_t site) {
  auto thread = uint16_t(fiber.thread);
  uint32_t sync = warps[fiber.warp].syncCount;
  uint32_t self = 1u << fiber.lane;
  bool isAtomic = kind == 2;
  bool isWrite = kind != 0;
  for (int64_t byte = offset; byte < offset + bytes; ++byte) {
    ShadowByte &state = shadow[size_t(byte)];
    int64_t other = -1;
    bool otherWrote = false;
    // Against the last write: every access must be ordered after it,
    // except an atomic after an atomic, and a plain write after a plain
    // write from the same store site by another lane of the same warp
    // between the same two warp syncs of both: that is one warp-wide store
    // instruction, of which CUDA lets one lane's value win (the NVPTX
    // kernels' uniform scalar stores to shared rows, each token's segment
    // of lanes syncing on its own).
    const bool convergentStore =
        isWrite && !isAtomic && !state.writeWasAtomic && site >= 0 &&
        state.writeSite == site && state.writer / kWarpSize == fiber.warp &&
        state.writeLaneSyncs == fiber.laneSyncs &&
        (fiber.lastSyncMembers >> (state.writer % kWarpSize)) & 1u;
    if (state.writeEpoch == epoch && state.writer != thread &&
        !(isAtomic && state.writeWasAtomic) && !convergentStore &&
        !isOrderedBefore(state.writer, state.writeSync, fiber)) {
      other = state.writer;
      otherWrote = true;
    }
    // A write against the reads since: each must be ordered before it.
    if (other < 0 && isWrite && state.readEpoch == epoch) {
      if (state.readerWarp == kSeveralWarps) {
        other =
            state.lastReader != thread ? state.lastReader : state.otherReader;
      } else if (state.readerWarp != fiber.warp) {
        other = state.lastReader;
      } else {
        for (uint32_t lanes = state.readerLanes & ~self; lanes;
             lanes &= lanes - 1) {
          int32_t lane = __builtin_ctz(lanes);
          if (clockOf(fiber, lane) <= state.readSync) {
            other = int64_t(fiber.warp) * kWarpSize + lane;
            break;
          }
        }
      }
    }
    if (other >= 0) {
      recordFault(
          fiber.thread,
          "shared-memory race on offset " + std::to_string(byte) + ": thread " +
              std::to_string(other) +
              (otherWrote ? " wrote it, thread " : " read it, thread ") +
              std::to_string(fiber.thread) +
              (isAtomic  ? " updates it atomically"
               : isWrite ? " writes it"
                         : " reads it") +
              " with no barrier or warp sync between them");
      abandon(fiber);
    }
    if (isWrite) {
      // Reads checked above are ordered before this write, hence before
      // whatever is ordered after it: only the write needs remembering.
      state.writeEpoch = epoch;
      state.writeSync = sync;
      state.writeLaneSyncs = fiber.laneSyncs;
      state.writer = thread;
      state.writeWasAtomic = isAtomic;
      state.writeSite = site;
      state.readEpoch = 0;
      continue;
    }
    if (state.readEpoch != epoch) {
      state.readEpoch = epoch;
      state.readSync = sync;
      state.readerWarp = uint16_t(fiber.warp);
      state.readerLanes = self;
      state.lastReader = state.otherReader = thread;
      continue;
    }
    state.readSync = std::max(state.readSync, sync);
    if (state.readerWarp != fiber.warp)
      state.readerWarp = kSeveralWarps;
    else
      state.readerLanes |= self;
    if (state.lastReader != thread) {
      state.otherReader = state.lastReader;
      state.lastReader = thread;
    }
  }
}

Fiber &fiberOf(void *ctx) { return *static_cast<Fiber *>(ctx); }

} // namespace

//===----------------------------------------------------------------------===//
// The calls lowered kernels make
//===----------------------------------------------------------------------===//

extern "C" int32_t moegen_emu_shfl_xor_i32(void *ctx, int32_t value,
                                           int32_t offset, int32_t width,
                                           int32_t mask) {
  Fiber &fiber = fiberOf(ctx);
  return fiber.runner->shuffleXor(fiber, value, offset, width, uint32_t(mask));
}

extern "C" int32_t moegen_emu_redux_i32(void *ctx, int32_t value, int32_t kind,
                                        int32_t mask) {
  Fiber &fiber = fiberOf(ctx);
  return fiber.runner->redux(fiber, value, kind, uint32_t(mask));
}

extern "C" int32_t moegen_emu_match_any_i32(void *ctx, int32_t value,
                                           int32_t mask) {
  Fiber &fiber = fiberOf(ctx);
  return fiber.runner->matchAny(fiber, value, uint32_t(mask));
}

extern "C" int32_t moegen_emu_ballot_i32(void *ctx, int32_t predicate,
                                         int32_t mask) {
  // A ballot is the or of each member's own bit.
  Fiber &fiber = fiberOf(ctx);
  const uint32_t bit = predicate != 0 ? 1u << fiber.lane : 0u;
  return fiber.runner->redux(fiber, int32_t(bit), kReduxOr, uint32_t(mask));
}

extern "C" void moegen_emu_warp_sync(void *ctx, int32_t mask) {
  Fiber &fiber = fiberOf(ctx);
  fiber.runner->warpSync(fiber, uint32_t(mask));
}

extern "C" void moegen_emu_barrier(void *ctx) {
  Fiber &fiber = fiberOf(ctx);
  fiber.runner->barrier(fiber);
}

extern "C" void moegen_emu_yield(void *ctx) {
  Fiber &fiber = fiberOf(ctx);
  fiber.runner->yield(fiber);
}

extern "C" int64_t moegen_emu_grid_dim(void *ctx) {
  return fiberOf(ctx).runner->gridDim();
}

extern "C" void *moegen_emu_shared_base(void *ctx) {
  return fiberOf(ctx).runner->sharedBase();
}

extern "C" int64_t moegen_emu_shared_bytes(void *ctx) {
  return fiberOf(ctx).runner->sharedBytes();
}

extern "C" void moegen_emu_check_access(void *ctx, const void *address,
                                        int64_t bytes, int32_t isWrite,
                                        int32_t isShared, int32_t site) {
  Fiber &fiber = fiberOf(ctx);
  fiber.runner->checkAccess(fiber, address, bytes, isWrite, isShared != 0,
                            site);
}

//===----------------------------------------------------------------------===//
// Launch
//===----------------------------------------------------------------------===//

std::string moegen::gpuemu::launch(const LaunchConfig &config,
                                   EmuKernelFn kernel,
                                   const std::vector<uint64_t> &params) {
  auto invalid = [&](const std::string &why) {
    return "gpu-emu: kernel '" + config.kernel + "': invalid launch: " + why;
  };
  if (config.gridDim < 0)
    return invalid("gridDim " + std::to_string(config.gridDim));
  if (config.blockDim < 1 || config.blockDim > kMaxBlockDim)
    return invalid("blockDim " + std::to_string(config.blockDim) +
                   " is not in [1, 1024]");
  if (config.sharedBytes < 0)
    return invalid("sharedBytes " + std::to_string(config.sharedBytes));
  if (config.gridDim == 0)
    return "";

  Launch state(config, kernel, params);
  unsigned workers = config.workerThreads
                         ? config.workerThreads
                         : std::max(1u, std::thread::hardware_concurrency());
  workers = unsigned(std::min<int64_t>(workers, config.gridDim));
  if (config.cooperative)
    workers = unsigned(config.gridDim);
  state.workers = workers;
  state.progress.reset(new Launch::ProgressCounter[workers]);

  // Blocks in a seeded order; workers draw them one by one.
  std::vector<int64_t> order(size_t(config.gridDim));
  for (int64_t b = 0; b < config.gridDim; ++b)
    order[size_t(b)] = b;
  Random random(config.seed);
  for (size_t i = order.size(); i > 1; --i)
    std::swap(order[i - 1], order[random.below(i)]);
  std::atomic<size_t> nextBlock{0};

  auto work = [&](unsigned worker) {
    BlockRunner runner(state, worker);
    if (!runner.ready())
      return;
    for (;;) {
      if (state.stop.load(std::memory_order_relaxed))
        return;
      size_t index = nextBlock.fetch_add(1, std::memory_order_relaxed);
      if (index >= order.size())
        return;
      runner.runBlock(order[index]);
    }
  };
  if (workers == 1) {
    work(0);
  } else {
    std::vector<std::thread> threads;
    threads.reserve(workers);
    try {
      for (unsigned w = 0; w < workers; ++w)
        threads.emplace_back(work, w);
    } catch (const std::system_error &e) {
      // Out of threads: stop the workers already started, then report.
      state.reportFault("gpu-emu: kernel '" + config.kernel +
                        "': cannot start a worker thread (" + e.what() + ")");
    }
    for (std::thread &thread : threads)
      thread.join();
  }
  return state.fault;
}

uint64_t moegen::gpuemu::seedFromEnvironment(uint64_t fallback) {
  const char *text = std::getenv("MOEGEN_EMU_SEED");
  if (!text || *text < '0' || *text > '9')
    return fallback;
  errno = 0;
  char *end = nullptr;
  unsigned long long seed = std::strtoull(text, &end, 10);
  if (errno != 0 || *end != '\0')
    return fallback;
  return seed;
}
