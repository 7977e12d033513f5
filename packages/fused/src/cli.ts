#!/usr/bin/env node
// The `dsa` command (skeleton until the fused operator lands).
console.log('dsa: the fused operator is not implemented yet');
