export { DsaError, ErrorCode, isDsaError, fromNativeError } from './errors.js';
export { f32ToBf16, bf16ToF32, roundBf16, f32ArrayToBf16, bf16ArrayToF32 } from './bf16.js';
export {
  tensor, zeros, fromFloat32, toFloat32, clone, numel,
  type Dtype, type Format, type Tensor, type Bf16Tensor, type F32Tensor, type I32Tensor, type DataOf,
} from './tensor.js';
export { toNZ, fromNZ, NZ_C0 } from './nz.js';
export {
  E4M3_MAX, FP8_BLOCK, E4M3_VALUES, e4m3ToFloat, floatToE4m3, ue8m0Scale, quantizeGroupE4m3, hadamardRotate,
  dequantizeBlocks, dequantizeFp8Weight, fp8PackedBytes, fp8PackedOffset, type Fp8Weight,
} from './fp8.js';
export { checkWeight, fp8ScaleGrid, isFp8Weight, type Weight, type WeightRule } from './weights.js';
export { Rng } from './random.js';
export { readBin, writeBin, readGoldenCase, type GoldenCase, type GoldenManifest, type ManifestEntry } from './io.js';
export {
  checkTensor, checkIntRange, DimBinder, sharesMemory, require_, unravel, intOption, numberOption, enumOption, storageElements,
  type TensorRule,
} from './validate.js';
export { loadAddon, addonEnvVar, type AddonSpec } from './loader.js';
export {
  setNumThreads, getNumThreads, setIsa, getIsa, registerAddon, ISAS,
  type Isa, type CpuFeatures, type ConfigurableAddon,
} from './runtime.js';
export { matmul, matmulBatched, packWeights, cpuFeatures, activeIsa, type MatmulOptions } from './matmul.js';
export { measureCeilings, probeBytes, type Ceilings } from './ceilings.js';
export { describeMachine, lastLevelCacheBytes, machineLine, type MachineInfo, type CacheLevel } from './machine.js';
export { allocateLarge, largeZeros } from './large.js';
export { relativeL2, iscloseFraction, compareBf16 } from './compare.js';
export { assertCachesIdle, withCaches } from './cache-lock.js';
export { abortedError, chunkAct, planRowChunks, saveCacheRows, signalOption, tokenRows, type RowChunk } from './abort.js';
export {
  SafetensorsFile, openSafetensors, writeSafetensors, SAFETENSORS_ITEMSIZE,
  type SafetensorsTensorInfo, type SafetensorsOpenOptions, type SafetensorsWriteEntry,
} from './safetensors.js';
export { rowsToBf16, type StoredRows, type Bf16Target, type StoredWeightDtype } from './dequant.js';
export {
  fp8KvRowBytes, fp8IndexRowBytes, quantizeCacheGroup, encodeLatentRow, encodeIndexKeyRow, hadamardBf16, latentCacheToBf16,
  indexKeyCacheToBf16, fp8IndexQueryToBf16, checkLatentCaches, checkIndexKeyCache, type CacheDimNames, type CacheDtype, type U8Tensor,
} from './fp8-cache.js';
