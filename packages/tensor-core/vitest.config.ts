import { defineProject } from 'vitest/config';
export default defineProject({ test: { name: 'tensor-core', include: ['test/**/*.test.ts'] } });
