// Starts Swagger UI on /docs. A file, not an inline script, so the page's CSP stays
// `script-src 'self'`; the bundle itself is served from the fastapi-offline package.
const root = document.getElementById("swagger-ui");

window.ui = SwaggerUIBundle({
  url: root.dataset.openapiUrl,
  dom_id: "#swagger-ui",
  layout: "BaseLayout",
  presets: [SwaggerUIBundle.presets.apis, SwaggerUIBundle.SwaggerUIStandalonePreset],
  deepLinking: true,
  showExtensions: true,
  showCommonExtensions: true,
  persistAuthorization: false,
  validatorUrl: null, // no badge fetched from the public validator
});
