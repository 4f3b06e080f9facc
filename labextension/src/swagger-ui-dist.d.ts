/** The part of swagger-ui-dist's prebuilt bundle the service catalog uses (it ships no types). */
declare module 'swagger-ui-dist' {
  export interface ISwaggerUIOptions {
    domNode: HTMLElement;
    spec: Record<string, unknown>;
    deepLinking?: boolean;
    tryItOutEnabled?: boolean;
    persistAuthorization?: boolean;
    defaultModelsExpandDepth?: number;
  }
  export const SwaggerUIBundle: (options: ISwaggerUIOptions) => unknown;
}
