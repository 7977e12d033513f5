import { defineProject } from 'vitest/config';
export default defineProject({ test: { name: 'mla-prolog', include: ['test/**/*.test.ts'] } });
