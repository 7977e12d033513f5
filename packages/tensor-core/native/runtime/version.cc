// The package version an addon was built from, also in its own ELF section: scripts/check-binaries.mjs
// reads it (readelf -p .dsa_version) from a binary of any architecture without loading it.
#if defined(__ELF__)
extern "C" __attribute__((used, section(".dsa_version"))) const char dsa_addon_version[] = DSA_ADDON_VERSION;
#endif
