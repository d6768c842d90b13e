//===- UninstrumentedLlvm.h - LLVM headers next to an uninstrumented LLVM -===//
//
// Force-included (-include) into the spec and dialect fuzz targets. Their
// own code is built with ASan, but Debian's libLLVM/libMLIR are not. LLVM's
// header-only allocators (BumpPtrAllocator) poison slab memory under ASan
// and unpoison each allocation; memory the uninstrumented library hands out
// from the same allocator is never unpoisoned, so ASan reports
// use-after-poison on valid memory. Both sides must agree: turn the
// poisoning off here.
//
//===----------------------------------------------------------------------===//

#ifndef MOEGEN_TESTS_FUZZ_UNINSTRUMENTEDLLVM_H
#define MOEGEN_TESTS_FUZZ_UNINSTRUMENTEDLLVM_H

#include "llvm/Support/Compiler.h"

#undef LLVM_ADDRESS_SANITIZER_BUILD
#define LLVM_ADDRESS_SANITIZER_BUILD 0
#undef __asan_poison_memory_region
#undef __asan_unpoison_memory_region
#define __asan_poison_memory_region(p, size) ((void)(p), (void)(size))
#define __asan_unpoison_memory_region(p, size) ((void)(p), (void)(size))

#endif // MOEGEN_TESTS_FUZZ_UNINSTRUMENTEDLLVM_H
