import { defineProject } from 'vitest/config';
export default defineProject({ test: { name: 'lightning-indexer', include: ['test/**/*.test.ts'] } });
