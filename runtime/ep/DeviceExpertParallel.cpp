//===- DeviceExpertParallel.cpp - EP operations on device buffers ---------===//

#include "runtime/ep/DeviceExpertParallel.h"

#include "abi/KernelError.h"
#include "runtime/Error.h"
#include "runtime/cuda/CudaDriver.h"
#include "runtime/ep/EpPlan.h"

#include <algorithm>
#include <cstdio>
#include <functional>
#include <limits>

namespace moegen::rt::ep {
namespace {

std::string hexPointer(CUdeviceptr pointer) {
  char text[32];
  std::snprintf(text, sizeof(text), "0x%llx",
                static_cast<unsigned long long>(pointer));
  return text;
}

/// The k, expert-count and token-count rules of plan::checkIds that come
/// before the ids are read; empty when a [tokens, k] int32 buffer may be.
std::string checkIdShape(int64_t tokens, int64_t k, int64_t numExperts,
                         const std::string &name, bool unusedSlots) {
  if (numExperts < 1 || k < 1 || k > numExperts || tokens < 0)
    return plan::checkIds({}, tokens, k, numExperts, name, unusedSlots);
  if (tokens > std::numeric_limits<int64_t>::max() / 4 / k)
    return name + ": the token count must be in [0, 2^61 / k), got " +
           std::to_string(tokens);
  return "";
}

/// Checks the device buffer `ids` [tokens, k] and reads it back into
/// `host`; then the ids themselves. Empty if fine.
std::string readAndCheckIds(DeviceCommunicator &comm, CUdeviceptr ids,
                            int64_t tokens, int64_t k, int64_t numExperts,
                            const std::string &name, bool unusedSlots,
                            std::vector<int32_t> &host) {
  std::string error = checkIdShape(tokens, k, numExperts, name, unusedSlots);
  if (!error.empty())
    return error;
  const std::size_t bytes =
      static_cast<std::size_t>(tokens * k) * sizeof(int32_t);
  error = checkDeviceBuffer(comm.driver(), comm.device(), name, ids, bytes);
  if (!error.empty())
    return error;
  host.resize(static_cast<std::size_t>(tokens * k));
  if (bytes) {
    const CudaDriver &driver = comm.driver();
    // A failure here is this rank's verdict, agreed on like a bad argument,
    // not an exception that would leave the other ranks waiting.
    CUresult result =
        driver.memcpyDtoHAsync(host.data(), ids, bytes, comm.stream());
    if (result == CUDA_SUCCESS)
      result = driver.streamSynchronize(comm.stream());
    if (result != CUDA_SUCCESS)
      return name + ": reading the ids back: " + driver.describe(result);
  }
  return plan::checkIds(host, tokens, k, numExperts, name, unusedSlots);
}

/// Byte counts and offsets of an all-to-all-v of whole rows.
struct RowExchange {
  std::vector<std::size_t> sendBytes, sendAt, recvBytes, recvAt;
  std::size_t sendTotal = 0, recvTotal = 0;

  RowExchange(const std::vector<std::size_t> &sendRows,
              const std::vector<std::size_t> &recvRows, std::size_t rowBytes) {
    for (std::size_t r = 0; r < sendRows.size(); ++r) {
      sendAt.push_back(sendTotal);
      sendBytes.push_back(sendRows[r] * rowBytes);
      sendTotal += sendBytes.back();
      recvAt.push_back(recvTotal);
      recvBytes.push_back(recvRows[r] * rowBytes);
      recvTotal += recvBytes.back();
    }
  }
};

const void *hostView(CUdeviceptr pointer) {
  return reinterpret_cast<const void *>(static_cast<uintptr_t>(pointer));
}
void *mutableView(CUdeviceptr pointer) {
  return reinterpret_cast<void *>(static_cast<uintptr_t>(pointer));
}

/// Runs `work` (allocations, queued copies) and returns its error as this
/// rank's verdict for the next agreement, "" when it succeeded.
std::string verdictOf(const std::function<void()> &work) {
  try {
    work();
  } catch (const Error &error) {
    return error.what();
  }
  return "";
}

} // namespace

CUdeviceptr DeviceWorkspace::get(Slot slot, const CudaDriver &driver,
                                 CUcontext in, std::size_t bytes) {
  if (in != context) {
    for (DeviceBuffer &buffer : buffers)
      buffer = DeviceBuffer();
    context = in;
  }
  if (bytes == 0)
    return 0;
  DeviceBuffer &buffer = buffers[slot];
  if (buffer.size() < bytes) {
    // The calls before have finished with it (the operations are
    // synchronous). A quarter more, so that slowly growing calls do not
    // reallocate every time.
    buffer = DeviceBuffer();
    buffer = DeviceBuffer(driver, context, bytes + bytes / 4);
  }
  return buffer.get();
}

std::size_t DeviceWorkspace::bytesHeld() const {
  std::size_t held = 0;
  for (const DeviceBuffer &buffer : buffers)
    held += buffer.size();
  return held;
}

namespace {

/// A workspace slot's buffer: the caller's workspace, else one of the
/// call's own.
class Scratch {
public:
  Scratch(DeviceWorkspace *workspace, const DeviceCommunicator &comm)
      : workspace(workspace ? workspace : &own), comm(comm) {}
  /// The call's own buffers are freed only after the work queued on them
  /// (an exception may leave copies queued).
  ~Scratch() {
    if (own.bytesHeld())
      comm.driver().streamSynchronize(comm.stream());
  }
  Scratch(const Scratch &) = delete;
  Scratch &operator=(const Scratch &) = delete;
  CUdeviceptr get(DeviceWorkspace::Slot slot, std::size_t bytes) {
    return workspace->get(slot, comm.driver(), comm.context(), bytes);
  }

private:
  DeviceWorkspace own;
  DeviceWorkspace *workspace;
  const DeviceCommunicator &comm;
};

} // namespace

std::string checkDeviceBuffer(const CudaDriver &driver, int device,
                              const std::string &name, CUdeviceptr pointer,
                              std::size_t bytes) {
  if (bytes == 0)
    return "";
  if (!pointer)
    return name + " is required (null device pointer)";
  unsigned memoryType = 0;
  int ordinal = -1;
  CUdeviceptr start = 0;
  std::size_t size = 0;
  CUpointer_attribute attributes[] = {
      CU_POINTER_ATTRIBUTE_MEMORY_TYPE, CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL,
      CU_POINTER_ATTRIBUTE_RANGE_START_ADDR, CU_POINTER_ATTRIBUTE_RANGE_SIZE};
  void *data[] = {&memoryType, &ordinal, &start, &size};
  CUresult result = driver.pointerGetAttributes(4, attributes, data, pointer);
  if (result != CUDA_SUCCESS)
    return name + " = " + hexPointer(pointer) +
           ": cuPointerGetAttributes: " + driver.describe(result);
  if (memoryType == 0)
    return name + " = " + hexPointer(pointer) +
           " is not memory the CUDA driver knows (pass device pointers)";
  if (memoryType != CU_MEMORYTYPE_DEVICE)
    return name + " = " + hexPointer(pointer) +
           " is host memory; the communicator moves device memory";
  if (ordinal != device)
    return name + " is on device " + std::to_string(ordinal) +
           ", the communicator's is device " + std::to_string(device);
  if (size != 0 && (pointer < start || pointer - start + bytes > size))
    return name + " needs " + std::to_string(bytes) + " bytes from " +
           hexPointer(pointer) + ", but its allocation holds only " +
           std::to_string(pointer < start ? 0 : size - (pointer - start)) +
           " from there";
  return "";
}

void copyRows(const CudaDriver &driver, CUstream stream, CUdeviceptr to,
              CUdeviceptr from, std::span<const int64_t> sourceRow,
              std::size_t rowBytes) {
  // Runs of consecutive source rows: one copy each.
  std::vector<CUdeviceptr> targets, sources;
  std::vector<std::size_t> sizes;
  for (std::size_t i = 0; i < sourceRow.size();) {
    std::size_t run = 1;
    while (i + run < sourceRow.size() &&
           sourceRow[i + run] == sourceRow[i] + static_cast<int64_t>(run))
      ++run;
    targets.push_back(to + i * rowBytes);
    sources.push_back(from + static_cast<std::size_t>(sourceRow[i]) * rowBytes);
    sizes.push_back(run * rowBytes);
    i += run;
  }
  if (targets.empty() || rowBytes == 0)
    return;
  const bool legacyStream = !stream || stream == CU_STREAM_LEGACY;
  if (driver.memcpyBatchAsync && !legacyStream && targets.size() > 1) {
    CUmemcpyAttributes attributes{};
    attributes.srcAccessOrder = CU_MEMCPY_SRC_ACCESS_ORDER_STREAM;
    std::size_t firstCopy = 0, failed = 0;
    CUresult result = driver.memcpyBatchAsync(
        targets.data(), sources.data(), sizes.data(), targets.size(),
        &attributes, &firstCopy, 1, &failed, stream);
    if (result != CUDA_SUCCESS)
      throw Error(Error::Kind::Driver,
                  "cuMemcpyBatchAsync(" + std::to_string(targets.size()) +
                      " row copies): " + driver.describe(result));
    return;
  }
  for (std::size_t i = 0; i < targets.size(); ++i)
    driver.check(
        driver.memcpyDtoDAsync(targets[i], sources[i], sizes[i], stream),
        "cuMemcpyDtoDAsync(rows)");
}

DeviceIds allGatherForcedIds(DeviceCommunicator &comm, CUdeviceptr ids,
                             int64_t tokens, int64_t k, int64_t numExperts,
                             bool unusedSlots) {
  const CudaDriver &driver = comm.driver();
  ScopedContext scope(driver, comm.context());
  std::vector<int32_t> host;
  const SignatureEntry signature[] = {{"k", k},
                                      {"experts", numExperts},
                                      {"unused_slots", unusedSlots},
                                      {"tokens", tokens, false}};
  std::vector<std::vector<int64_t>> agreed =
      agreeOnArguments(comm, "all_gather_forced_ids", signature,
                       readAndCheckIds(comm, ids, tokens, k, numExperts,
                                       "forced_ids", unusedSlots, host));
  const std::vector<int64_t> &rankTokens = agreed[3];

  const std::size_t ranks = rankTokens.size();
  std::vector<std::size_t> sendRows(ranks, static_cast<std::size_t>(tokens)),
      recvRows(ranks);
  for (std::size_t r = 0; r < ranks; ++r)
    recvRows[r] = static_cast<std::size_t>(rankTokens[r]);
  const std::size_t rowBytes = static_cast<std::size_t>(k) * sizeof(int32_t);
  RowExchange exchange(sendRows, recvRows, rowBytes);
  // Every destination reads the same bytes: the send ranges overlap.
  std::fill(exchange.sendAt.begin(), exchange.sendAt.end(), 0);

  DeviceIds gathered;
  gathered.tokens = static_cast<int64_t>(exchange.recvTotal / rowBytes);
  agreeOnArguments(comm, "all_gather_forced_ids", {}, verdictOf([&] {
                     gathered.ids = DeviceBuffer(driver, comm.context(),
                                                 exchange.recvTotal);
                   }));
  comm.allToAllV(hostView(ids), exchange.sendBytes, exchange.sendAt,
                 mutableView(gathered.ids.get()), exchange.recvBytes,
                 exchange.recvAt);
  return gathered;
}

DeviceDispatched dispatch(DeviceCommunicator &comm, CUdeviceptr hidden,
                          RowType rowType, int64_t hiddenSize, CUdeviceptr ids,
                          int64_t tokens, int64_t k,
                          const ExpertPlacement &placement, bool unusedSlots,
                          DeviceWorkspace *workspace) {
  const CudaDriver &driver = comm.driver();
  ScopedContext scope(driver, comm.context());
  const int ranks = comm.size();
  std::vector<int32_t> host;
  std::string error =
      plan::checkPlacementAndHidden(placement, ranks, hiddenSize);
  if (error.empty())
    error = readAndCheckIds(comm, ids, tokens, k, placement.numExperts(), "ids",
                            unusedSlots, host);
  const std::size_t rowBytes = plan::rowBytes(rowType, hiddenSize);
  if (error.empty()) {
    if (tokens > 0 &&
        static_cast<std::size_t>(tokens) >
            std::numeric_limits<std::size_t>::max() / 4 / rowBytes)
      error = "hidden: [" + std::to_string(tokens) + ", " +
              std::to_string(hiddenSize) + "] rows are too large";
    else
      error = checkDeviceBuffer(driver, comm.device(), "hidden", hidden,
                                static_cast<std::size_t>(tokens) * rowBytes);
  }
  agreeOnArguments(comm, "dispatch",
                   plan::dispatchSignature(rowType, hiddenSize, tokens, k,
                                           placement, unusedSlots),
                   error);

  plan::Sends sends =
      plan::planSends(host, tokens, k, placement, ranks, comm.rank());
  std::vector<int64_t> sendCounts(static_cast<std::size_t>(ranks));
  std::vector<int64_t> packedTokens;
  for (int r = 0; r < ranks; ++r) {
    sendCounts[r] = static_cast<int64_t>(sends.tokensTo[r].size());
    packedTokens.insert(packedTokens.end(), sends.tokensTo[r].begin(),
                        sends.tokensTo[r].end());
  }
  // Each token's row once per destination rank, packed by rank (queued
  // before the counts travel); the receive buffer once they have. A
  // failure on any rank is agreed on before the rows move.
  const CUstream stream = comm.stream();
  Scratch scratch(workspace, comm);
  CUdeviceptr send = 0, received = 0;
  std::string failure = verdictOf([&] {
    send = scratch.get(DeviceWorkspace::Send, packedTokens.size() * rowBytes);
    copyRows(driver, stream, send, hidden, packedTokens, rowBytes);
  });
  std::vector<int64_t> recvCounts = plan::exchangeCounts(comm, sendCounts);
  std::vector<std::size_t> sendRows(sendCounts.begin(), sendCounts.end()),
      recvRows(recvCounts.begin(), recvCounts.end());
  RowExchange exchange(sendRows, recvRows, rowBytes);
  if (failure.empty())
    failure = verdictOf([&] {
      received = scratch.get(DeviceWorkspace::Received, exchange.recvTotal);
    });
  agreeOnArguments(comm, "dispatch", {}, failure);
  comm.allToAllV(hostView(send), exchange.sendBytes, exchange.sendAt,
                 mutableView(received), exchange.recvBytes, exchange.recvAt);
  plan::Received<int32_t> slotsFrom =
      plan::exchangeVectors(comm, sends.slotsTo);
  plan::Grouping grouping =
      plan::groupReceived(slotsFrom, recvRows, k, sends.localExperts);

  DeviceDispatched result;
  const std::size_t groupedBytes = grouping.sourceRow.size() * rowBytes;
  if (workspace) {
    result.rows = workspace->get(DeviceWorkspace::Rows, driver, comm.context(),
                                 groupedBytes);
  } else {
    result.ownedRows = DeviceBuffer(driver, comm.context(), groupedBytes);
    result.rows = result.ownedRows.get();
  }
  copyRows(driver, stream, result.rows, received, grouping.sourceRow, rowBytes);
  // The exchange buffers are reused or freed after the return.
  driver.check(driver.streamSynchronize(stream), "cuStreamSynchronize");
  result.expertOffsets = std::move(grouping.expertOffsets);
  result.handle =
      plan::makeHandle(tokens, k, hiddenSize, rowType, sends, grouping);
  return result;
}

namespace {

/// What combine needs of the router, empty if fine.
std::string checkCombineRouter(const DeviceCommunicator &comm,
                               const CudaRouter &router,
                               const DispatchHandle &handle) {
  const Manifest &manifest = router.manifest();
  if (!router.hasEntry(EntryKind::Combine))
    return "the router has no combine kernel (compile its spec with "
           "permute: true)";
  if (router.context() != comm.context())
    return "the router's kernels are loaded in another CUDA context than "
           "the communicator's (device " +
           std::to_string(comm.device()) + ")";
  if (manifest.topK != handle.k)
    return "the router's k is " + std::to_string(manifest.topK) +
           ", the dispatch's " + std::to_string(handle.k);
  const DType rowDType =
      handle.rowType == RowType::F32 ? DType::F32 : DType::BF16;
  if (manifest.hiddenDType != rowDType)
    return "the router's hidden rows are " +
           std::string(manifest.hiddenDType
                           ? abi::toString(*manifest.hiddenDType)
                           : std::string_view("absent")) +
           ", the dispatch's " + std::string(abi::toString(rowDType));
  // A slot dispatch sent nowhere (-1, unusedSlots) is a slot without a row
  // for the kernel too: only a top-p or capacity program's combine takes
  // one.
  if (!manifest.unusedSlots && manifest.capacityFactor <= 0.0 &&
      std::find(handle.slotRank.begin(), handle.slotRank.end(), -1) !=
          handle.slotRank.end())
    return "the dispatch left slots unused, but the router's combine "
           "kernel takes every slot (a top-p or capacity spec's does not)";
  if (handle.tokens * handle.k > std::numeric_limits<int32_t>::max())
    return "tokens * k = " + std::to_string(handle.tokens * handle.k) +
           " exceeds the kernel's int32 slot positions";
  return "";
}

} // namespace

void combine(DeviceCommunicator &comm, const CudaRouter &router,
             const DispatchHandle &handle, CUdeviceptr expertOutputs,
             CUdeviceptr weights, CUdeviceptr combined,
             DeviceWorkspace *workspace) {
  const CudaDriver &driver = comm.driver();
  ScopedContext scope(driver, comm.context());
  const std::size_t rowBytes =
      plan::rowBytes(handle.rowType, handle.hiddenSize);
  const auto slots = static_cast<std::size_t>(handle.tokens * handle.k);
  std::string error = plan::checkCombine(
      comm, handle, static_cast<std::size_t>(handle.groupedRows) * rowBytes,
      slots);
  if (error.empty())
    error = checkCombineRouter(comm, router, handle);
  if (error.empty())
    for (const std::vector<int64_t> &rows : handle.returnRows)
      for (int64_t at : rows)
        if (error.empty() && (at < 0 || at >= handle.groupedRows))
          error = "the handle's return row " + std::to_string(at) +
                  " is outside its " + std::to_string(handle.groupedRows) +
                  " grouped rows";
  if (error.empty())
    error = checkDeviceBuffer(
        driver, comm.device(), "expert outputs", expertOutputs,
        static_cast<std::size_t>(handle.groupedRows) * rowBytes);
  if (error.empty())
    error = checkDeviceBuffer(driver, comm.device(), "weights", weights,
                              slots * sizeof(float));
  if (error.empty())
    error =
        checkDeviceBuffer(driver, comm.device(), "combined", combined,
                          static_cast<std::size_t>(handle.tokens) * rowBytes);
  const SignatureEntry signature[] = {
      {"k", handle.k},
      {"hidden_size", handle.hiddenSize},
      {"row_type", static_cast<int64_t>(handle.rowType)}};
  agreeOnArguments(comm, "combine", signature, error);

  // Counts first, and a verdict every rank reads: handles from different
  // dispatches are refused on every rank before any row moves (one rank
  // throwing alone would leave the others waiting in the exchange).
  const auto ranks = static_cast<std::size_t>(comm.size());
  std::vector<int64_t> sendCounts(ranks);
  std::vector<int64_t> packedRows;
  for (std::size_t r = 0; r < ranks; ++r) {
    sendCounts[r] = static_cast<int64_t>(handle.returnRows[r].size());
    packedRows.insert(packedRows.end(), handle.returnRows[r].begin(),
                      handle.returnRows[r].end());
  }
  // This rank's buffers, sized by what it sends and holds, and the
  // outputs' copies queued before the verdicts meet.
  const CUstream stream = comm.stream();
  Scratch scratch(workspace, comm);
  CUdeviceptr back = 0, outputs = 0, slotPositions = 0, record = 0;
  std::string mismatch = verdictOf([&] {
    back = scratch.get(DeviceWorkspace::Back, packedRows.size() * rowBytes);
    // The combine kernel reads [T * k, H] expert-output rows: the received
    // ones, a row per used slot, fill the front.
    outputs = scratch.get(DeviceWorkspace::Returned, slots * rowBytes);
    slotPositions =
        scratch.get(DeviceWorkspace::Positions, slots * sizeof(int32_t));
    record = scratch.get(DeviceWorkspace::Record,
                         kGpuKernelErrorWords * sizeof(int64_t));
    copyRows(driver, stream, back, expertOutputs, packedRows, rowBytes);
  });
  std::vector<int64_t> recvCounts = plan::exchangeCounts(comm, sendCounts);
  const std::vector<std::size_t> expected =
      plan::expectedReturnBytes(handle, comm.size());
  for (std::size_t r = 0; r < ranks && mismatch.empty(); ++r)
    if (static_cast<std::size_t>(recvCounts[r]) * rowBytes != expected[r])
      mismatch = "rank " + std::to_string(r) + " sends back " +
                 std::to_string(recvCounts[r] * rowBytes) + " bytes, " +
                 std::to_string(expected[r]) +
                 " expected: the ranks' handles are not from one dispatch";
  agreeOnArguments(comm, "combine", {}, mismatch);

  std::vector<std::size_t> sendRows(sendCounts.begin(), sendCounts.end()),
      recvRows(recvCounts.begin(), recvCounts.end());
  RowExchange exchange(sendRows, recvRows, rowBytes);
  comm.allToAllV(hostView(back), exchange.sendBytes, exchange.sendAt,
                 mutableView(outputs), exchange.recvBytes, exchange.recvAt);
  if (handle.tokens == 0)
    return;

  // Slot (t, j)'s row: rank r's rows arrive in (token, slot) order.
  std::vector<int32_t> positions(slots);
  std::vector<int64_t> next(ranks);
  for (std::size_t r = 0; r < ranks; ++r)
    next[r] = static_cast<int64_t>(exchange.recvAt[r] / rowBytes);
  for (std::size_t slot = 0; slot < slots; ++slot) {
    const int32_t r = handle.slotRank[slot];
    positions[slot] = r < 0 ? -1 : static_cast<int32_t>(next[r]++);
  }
  driver.check(driver.memcpyHtoDAsync(slotPositions, positions.data(),
                                      slots * sizeof(int32_t), stream),
               "cuMemcpyHtoDAsync(slot positions)");
  CombineArgs args;
  args.numTokens = handle.tokens;
  args.hiddenSize = handle.hiddenSize;
  args.topkWeights = weights;
  args.slotPositions = slotPositions;
  args.expertOutput = outputs;
  args.combined = combined;
  // The workspace's record may be fresh memory: a record starts at zero
  // (the launch does not zero it).
  driver.check(driver.memsetD8Async(record, 0,
                                    kGpuKernelErrorWords * sizeof(int64_t),
                                    stream),
               "cuMemsetD8Async(error record)");
  args.error = record;
  router.combine(args, stream);
  router.checkErrors(stream, record, "combine");
}

} // namespace moegen::rt::ep
