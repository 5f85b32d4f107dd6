// What every kernel file takes from the C library, for all three compilers of one kernel source:
// nvcc and the host C++ emulator build get the libc headers; NVRTC has no libc headers, so it gets
// the fixed-width integers and the two float constants the kernels use (the math functions are
// NVRTC built-ins). NVRTC defines __CUDACC_RTC__.
#pragma once
#if defined(__CUDACC_RTC__)
typedef signed char int8_t;
typedef short int16_t;
typedef int int32_t;
typedef long long int64_t;
typedef unsigned char uint8_t;
typedef unsigned short uint16_t;
typedef unsigned int uint32_t;
typedef unsigned long long uint64_t;
typedef unsigned long long uintptr_t;
#define NAN __int_as_float(0x7fffffff)
#define INFINITY __int_as_float(0x7f800000)
#else
#include <math.h>
#include <stdint.h>
#endif
