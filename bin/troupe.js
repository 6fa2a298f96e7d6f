#!/usr/bin/env node
// Troupe ships TypeScript sources; tsx compiles them (and the user's crew files) on load.
import { register } from 'tsx/esm/api';

register();
await import('../cli/main.ts');
