#include "core/backend.hpp"

#include "core/cpu/cpu_backend.hpp"
#include "core/error.hpp"
#ifdef SWITCHYARD_HAVE_CUDA
#include "core/cuda/cuda_backend.hpp"
#endif

namespace sy {

bool cuda_built() {
#ifdef SWITCHYARD_HAVE_CUDA
  return true;
#else
  return false;
#endif
}

bool cuda_available() {
#ifdef SWITCHYARD_HAVE_CUDA
  return cuda_device_count() > 0;
#else
  return false;
#endif
}

std::unique_ptr<Backend> make_backend(Device device) {
  if (device == Device::CPU) return std::make_unique<CpuBackend>();
#ifdef SWITCHYARD_HAVE_CUDA
  SY_CHECK_AS(DeviceError, cuda_device_count() > 0,
              "the CUDA backend is built but no CUDA device is usable (driver missing or no GPU)");
  return make_cuda_backend(0);
#else
  throw DeviceError("this switchyard was built without CUDA; rebuild with nvcc on the PATH or -DSWITCHYARD_CUDA=ON");
#endif
}

}  // namespace sy
