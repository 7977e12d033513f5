import { defineProject } from 'vitest/config';
export default defineProject({ test: { name: 'sparse-flash-attn', include: ['test/**/*.test.ts'] } });
