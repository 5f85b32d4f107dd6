// torch.distributed's engine, c10d, for the Rust side (src/distributed/): a TCPStore for the
// rendezvous (and the ranks' heartbeats), and a process group on it: a c10d Backend
// (ProcessGroupGloo here; ProcessGroupNCCL through a factory from a separately loaded library). Collectives are c10d's own; this file
// only adapts calling conventions. Every export runs through enl_guard: no exception escapes.
#include <ATen/ATen.h>
#include <c10/util/Logging.h>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstdint>
#include <sstream>
#include <string>
#include <vector>

#include "guard.h"

using std::chrono::milliseconds;

struct enl_store {
    c10::intrusive_ptr<c10d::Store> store;
};

struct enl_pg {
    c10::intrusive_ptr<c10d::Store> store;
    c10::intrusive_ptr<c10d::Backend> backend;
    milliseconds timeout;
};

// One Work per tensor: c10d's allreduce takes a single tensor per call on both backends.
struct enl_work {
    std::vector<c10::intrusive_ptr<c10d::Work>> works;
};

// Builds a c10d Backend on a store; the NCCL library exports one (bridge/nccl.cpp). On success
// *backend holds one reference, released with c10::intrusive_ptr::release().
typedef int (*enl_backend_factory)(c10d::Store* store, int rank, int size, int64_t timeout_ms, int device,
                                   c10d::Backend** backend, char** message);

namespace {

// Gloo's transport devices: one per interface named in GLOO_SOCKET_IFNAME (comma-separated, as
// PyTorch reads it), else the given hostname (the loopback address for local launches), else the
// address this machine's hostname resolves to.
std::vector<std::shared_ptr<::gloo::transport::Device>> gloo_devices(const char* interfaces, const char* hostname) {
    std::vector<std::shared_ptr<::gloo::transport::Device>> devices;
    if (interfaces != nullptr && interfaces[0] != '\0') {
        std::stringstream list(interfaces);
        std::string name;
        while (std::getline(list, name, ',')) {
            if (!name.empty()) devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(name));
        }
    } else if (hostname != nullptr && hostname[0] != '\0') {
        devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname(hostname));
    } else {
        devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
    }
    TORCH_CHECK(!devices.empty(), "GLOO_SOCKET_IFNAME names no interface: '", interfaces, "'");
    return devices;
}

// Waits for every piece of `work`; a piece not done within `timeout` is an error, and so is a
// piece that failed (a peer gone, gloo's own timeout): wait() rethrows its exception.
void wait_all(const std::vector<c10::intrusive_ptr<c10d::Work>>& works, milliseconds timeout) {
    for (const auto& work : works) {
        work->wait(timeout);
    }
}

// Raises c10's log level to FATAL for its lifetime: the store's connect retries log each failure
// with its C++ stack frames (dozens of lines); the error that ends the rendezvous says it all.
class QuietStore {
   public:
    QuietStore() : saved_(FLAGS_caffe2_log_level) { FLAGS_caffe2_log_level = 3; }
    ~QuietStore() { FLAGS_caffe2_log_level = saved_; }
    QuietStore(const QuietStore&) = delete;
    QuietStore& operator=(const QuietStore&) = delete;

   private:
    int saved_;
};

}  // namespace

// A TCPStore at master_addr:master_port: served here when is_server (rank 0), else a client
// that connects to it, within timeout_ms. It does not wait for the other ranks: the Rust side
// does (src/distributed/rendezvous.rs), so that ranks can compare their settings first.
extern "C" int enl_store_new(const char* master_addr, uint16_t master_port, int is_server, int64_t timeout_ms,
                             enl_store** out, char** message) {
    return enlighten::enl_guard(message, [&] {
        c10d::TCPStoreOptions options;
        options.port = master_port;
        options.isServer = is_server != 0;
        options.waitWorkers = false;
        options.timeout = milliseconds(timeout_ms);
        QuietStore quiet;
        *out = new enl_store{c10::make_intrusive<c10d::TCPStore>(master_addr, options)};
    });
}

// Another connection to the same store with its own timeout (for the heartbeat, whose calls must
// neither wait behind the process group's nor block as long).
extern "C" int enl_store_clone(enl_store* store, int64_t timeout_ms, enl_store** out, char** message) {
    return enlighten::enl_guard(message, [&] {
        QuietStore quiet;
        auto client = store->store->clone();
        client->setTimeout(milliseconds(timeout_ms));
        *out = new enl_store{client};
    });
}

extern "C" void enl_store_free(enl_store* store) noexcept {
    try {
        delete store;
    } catch (...) {
        // As in enl_pg_free.
    }
}

extern "C" int enl_store_set(enl_store* store, const char* key, const uint8_t* value, size_t len, char** message) {
    return enlighten::enl_guard(message, [&] { store->store->set(key, std::vector<uint8_t>(value, value + len)); });
}

// Whether `key` is set, without waiting.
extern "C" int enl_store_check(enl_store* store, const char* key, int* exists, char** message) {
    return enlighten::enl_guard(message, [&] { *exists = store->store->check({key}) ? 1 : 0; });
}

// The value of `key` (waits for it up to the store's timeout), malloc'ed into *value.
extern "C" int enl_store_get(enl_store* store, const char* key, uint8_t** value, size_t* len, char** message) {
    return enlighten::enl_guard(message, [&] {
        std::vector<uint8_t> bytes = store->store->get(key);
        auto* copy = static_cast<uint8_t*>(std::malloc(bytes.empty() ? 1 : bytes.size()));
        TORCH_CHECK(copy != nullptr, "out of memory for a store value of ", bytes.size(), " bytes");
        std::copy(bytes.begin(), bytes.end(), copy);
        *value = copy;
        *len = bytes.size();
    });
}

// A process group of `size` ranks on `store` (the ranks have met there already).
// factory == nullptr selects Gloo with the devices described above.
extern "C" int enl_pg_new(enl_store* store, int rank, int size, int64_t timeout_ms, const char* gloo_interfaces,
                          const char* gloo_hostname, enl_backend_factory factory, int device, enl_pg** out,
                          char** message) {
    return enlighten::enl_guard(message, [&] {
        milliseconds timeout(timeout_ms);
        c10::intrusive_ptr<c10d::Backend> backend;
        if (factory == nullptr) {
            auto options = c10d::ProcessGroupGloo::Options::create(timeout);
            options->devices = gloo_devices(gloo_interfaces, gloo_hostname);
            backend = c10::make_intrusive<c10d::ProcessGroupGloo>(store->store, rank, size, options);
        } else {
            c10d::Backend* raw = nullptr;
            char* factory_message = nullptr;
            if (factory(store->store.get(), rank, size, timeout_ms, device, &raw, &factory_message) != 0) {
                std::string text = factory_message != nullptr ? factory_message : "backend factory failed";
                std::free(factory_message);
                throw std::runtime_error(text);
            }
            backend = c10::intrusive_ptr<c10d::Backend>::reclaim(raw);
        }
        *out = new enl_pg{store->store, backend, timeout};
    });
}

// Destroying a Gloo backend waits for its queued work, which gloo's timeout bounds.
extern "C" void enl_pg_free(enl_pg* pg) noexcept {
    try {
        delete pg;
    } catch (...) {
        // A destructor that throws leaves nothing to recover; the handle is gone either way.
    }
}

// Sums each tensor over the ranks, in place, asynchronously: *out waits for all of them.
extern "C" int enl_pg_allreduce_sum(enl_pg* pg, const at::Tensor* const* tensors, size_t count, enl_work** out,
                                    char** message) {
    return enlighten::enl_guard(message, [&] {
        auto work = std::make_unique<enl_work>();
        c10d::AllreduceOptions options;
        options.reduceOp = c10d::ReduceOp::SUM;
        for (size_t i = 0; i < count; ++i) {
            std::vector<at::Tensor> one{*tensors[i]};
            work->works.push_back(pg->backend->allreduce(one, options));
        }
        *out = work.release();
    });
}

// timeout_ms 0 is c10d's kNoTimeout: NCCL then makes the current stream wait instead of the host.
extern "C" int enl_work_wait(enl_work* work, int64_t timeout_ms, char** message) {
    return enlighten::enl_guard(message, [&] { wait_all(work->works, milliseconds(timeout_ms)); });
}

extern "C" void enl_work_free(enl_work* work) noexcept {
    try {
        delete work;
    } catch (...) {
        // As in enl_pg_free.
    }
}

// Every rank's `input` (all of one shape), concatenated along dim 0 in rank order (stacked when
// the input is a scalar). Waits for completion.
extern "C" int enl_pg_allgather(enl_pg* pg, const at::Tensor* input, at::Tensor** out, char** message) {
    return enlighten::enl_guard(message, [&] {
        std::vector<std::vector<at::Tensor>> outputs(1);
        for (int r = 0; r < pg->backend->getSize(); ++r) outputs[0].push_back(at::empty_like(*input));
        std::vector<at::Tensor> inputs{*input};
        wait_all({pg->backend->allgather(outputs, inputs)}, pg->timeout);
        *out = new at::Tensor(input->dim() == 0 ? at::stack(outputs[0]) : at::cat(outputs[0]));
    });
}

// Overwrites `tensor` on every rank with root's, and waits.
extern "C" int enl_pg_broadcast(enl_pg* pg, const at::Tensor* tensor, int root, char** message) {
    return enlighten::enl_guard(message, [&] {
        std::vector<at::Tensor> tensors{*tensor};
        c10d::BroadcastOptions options;
        options.rootRank = root;
        wait_all({pg->backend->broadcast(tensors, options)}, pg->timeout);
    });
}

extern "C" int enl_pg_barrier(enl_pg* pg, char** message) {
    return enlighten::enl_guard(message, [&] { wait_all({pg->backend->barrier()}, pg->timeout); });
}

// tch has no setter for `.grad`: gives `param` the gradient `grad` (shared, not copied), as an
// optimiser expects after an all-reduce filled a gradient this rank did not compute.
extern "C" int enl_set_grad(const at::Tensor* param, const at::Tensor* grad, char** message) {
    return enlighten::enl_guard(message, [&] {
        TORCH_CHECK(param->sizes() == grad->sizes(), "`grad`: expected the shape of the parameter ", param->sizes(),
                    ", got ", grad->sizes());
        param->mutable_grad() = *grad;
    });
}
