// Types of api-types.mjs, for the freshness test (test/generated.test.ts).
export declare const SCHEMA: string;
export declare const TYPES: string;
export declare function apiTypes(): Promise<string>;
export declare function committedApiTypes(): Promise<string>;
