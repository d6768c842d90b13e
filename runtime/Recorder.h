//===- Recorder.h - Router capture buffers for replay -----------*- C++ -*-===//
//
// Router replay: record the experts chosen for every token and layer during
// rollout, then force the same experts during training. The capture buffer
// is laid out the way vLLM returns it, [tokens, layers, k], int16 when
// num_experts <= 32767 and int32 otherwise; it is exactly the `capture`
// tensor a route kernel with capture writes, so a device capture buffer can
// be copied into data() byte for byte.
//
// A Recorder lives on the host. It is saved and loaded as .npy; layer(l) is
// the [tokens, k] slice of one layer, and forcedIds() turns it into the
// contiguous int32 forced_ids tensor the replay entry point takes. Values
// are validated (in [0, E), distinct within a token) on load and before
// replay; an error names the file, the layer, the token and the value.
// Errors are thrown as moegen::rt::Error (Kind::InvalidArgument or Io).
//
//===----------------------------------------------------------------------===//

#ifndef MOEGEN_RUNTIME_RECORDER_H
#define MOEGEN_RUNTIME_RECORDER_H

#include "runtime/npy/Npy.h"

#include <cstdint>
#include <string>
#include <vector>

namespace moegen::rt {

class Recorder;

/// One layer of a capture buffer: ids[t][j] for t < numTokens(), j < topK().
class LayerView {
public:
  int64_t layer() const { return layerIndex; }
  int64_t numTokens() const;
  int64_t topK() const;
  int32_t at(int64_t token, int64_t j) const;
  /// The ids as a contiguous [tokens, k] int32 array: the forced_ids input
  /// of replay. Validates first (see Recorder::validate).
  std::vector<int32_t> forcedIds() const;
  /// Writes forcedIds() to `out` (numTokens() * topK() values).
  void copyForcedIds(int32_t *out) const;

private:
  friend class Recorder;
  LayerView(const Recorder &recorder, int64_t layer)
      : recorder(&recorder), layerIndex(layer) {}
  const Recorder *recorder;
  int64_t layerIndex;
};

class Recorder {
public:
  /// A zeroed buffer of [numTokens, numLayers, topK]; the element type
  /// follows numExperts. Throws on non-positive sizes (numTokens may be 0)
  /// or topK > numExperts.
  Recorder(int64_t numTokens, int64_t numLayers, int64_t topK,
           int64_t numExperts);

  /// Loads a capture saved by save() (or by vLLM through np.save): a 3-d
  /// .npy array of the dtype numExperts calls for, every id validated.
  /// `unusedSlots`: the capture of a top-p router, whose unused slots hold
  /// -1 (see setUnusedSlots).
  static Recorder load(const std::string &path, int64_t numExperts,
                       bool unusedSlots = false);

  /// Writes the buffer as .npy (atomically: a temporary file and a rename).
  void save(const std::string &path) const;

  int64_t numTokens() const { return array.shape[0]; }
  int64_t numLayers() const { return array.shape[1]; }
  int64_t topK() const { return array.shape[2]; }
  int64_t numExperts() const { return experts; }
  /// npy::DType::I16 or I32.
  npy::DType dtype() const { return array.dtype; }
  size_t elementBytes() const { return npy::itemSize(array.dtype); }

  /// The raw [tokens, layers, k] buffer (sizeBytes() bytes), e.g. the
  /// destination of a device-to-host copy of a capture tensor.
  void *data() { return array.data.data(); }
  const void *data() const { return array.data.data(); }
  size_t sizeBytes() const { return array.data.size(); }

  int32_t at(int64_t token, int64_t layer, int64_t j) const;
  void set(int64_t token, int64_t layer, int64_t j, int32_t id);

  /// One layer, to feed replay.
  LayerView layer(int64_t layer) const;

  /// A top-p router's capture (RouterFacts::unusedSlots): -1 marks an
  /// unused slot, which set(), validate() and replay accept (it is neither
  /// range-checked nor compared). Off by default: -1 is then an error.
  void setUnusedSlots(bool allowed) { unused = allowed; }
  bool unusedSlots() const { return unused; }

  /// Checks every id: in [0, numExperts) (or -1 with unusedSlots()) and
  /// distinct within its token and layer. Throws one line naming `source` (the file, or "capture"), the
  /// layer, the token and the value.
  void validate() const;
  /// validate() for one layer.
  void validateLayer(int64_t layer) const;

  /// Names this buffer in messages (load() sets it to the path).
  void setSource(std::string name) { source = std::move(name); }
  const std::string &sourceName() const { return source; }

  const npy::Array &npyArray() const { return array; }

private:
  Recorder() = default;
  npy::Array array;
  int64_t experts = 0;
  bool unused = false;
  std::string source = "capture";
};

} // namespace moegen::rt

#endif // MOEGEN_RUNTIME_RECORDER_H
