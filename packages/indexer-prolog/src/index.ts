export { nativeAddon } from './native.js';
