// Builds the emulator's entry table: for each kernel, its parameter types (checked against the
// Rust launch's arguments), the GPU compiler's figures for it (launch bounds, static shared
// memory, registers: the launch rules' data) and a call that unpacks cuLaunchKernel-style
// parameters.
#pragma once
#include <stddef.h>

#include <type_traits>
#include <utility>

#include "emu_abi.h"

namespace emu {

template <typename T>
constexpr EmuParamType param_type() {
    if (std::is_pointer<T>::value) return {EMU_PARAM_POINTER, (uint32_t)sizeof(T)};
    if (std::is_integral<T>::value || std::is_enum<T>::value) return {EMU_PARAM_INTEGER, (uint32_t)sizeof(T)};
    if (std::is_floating_point<T>::value) return {EMU_PARAM_FLOAT, (uint32_t)sizeof(T)};
    return {EMU_PARAM_OTHER, (uint32_t)sizeof(T)};
}

template <typename F, F f>
struct EntryOf;

template <typename... A, void (*f)(A...)>
struct EntryOf<void (*)(A...), f> {
    static_assert(sizeof...(A) <= EMU_MAX_PARAMS, "raise EMU_MAX_PARAMS");

    template <size_t... I>
    static void call_at(void** p, std::index_sequence<I...>) {
        f(*static_cast<std::remove_cv_t<A>*>(p[I])...);
    }
    static void call(void** p) { call_at(p, std::index_sequence_for<A...>{}); }

    static EmuEntry make(const char* name, uint32_t max_threads, uint32_t static_shared, uint32_t registers) {
        EmuEntry e{};
        e.name = name;
        e.max_threads = max_threads;
        e.static_shared = static_shared;
        e.registers = registers;
        e.nparams = sizeof...(A);
        const EmuParamType types[] = {param_type<std::remove_cv_t<A>>()..., EmuParamType{0, 0}};
        for (size_t i = 0; i < sizeof...(A); ++i) e.params[i] = types[i];
        e.call = &call;
        return e;
    }
};

}  // namespace emu

#define EMU_ENTRY(k, max_threads, static_shared, registers) \
    ::emu::EntryOf<decltype(&k), &k>::make(#k, max_threads, static_shared, registers)
