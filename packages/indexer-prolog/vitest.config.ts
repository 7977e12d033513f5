import { defineProject } from 'vitest/config';
export default defineProject({ test: { name: 'indexer-prolog', include: ['test/**/*.test.ts'] } });
