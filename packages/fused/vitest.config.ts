import { defineProject } from 'vitest/config';
export default defineProject({ test: { name: 'fused', include: ['test/**/*.test.ts'] } });
