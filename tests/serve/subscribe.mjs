// The seed's JavaScript snippet, with @fal-ai/client pointed at a local magihuman-serve by a
// requestMiddleware that rewrites the host (Node trusts the server's CA via NODE_EXTRA_CA_CERTS).
import { createRequire } from "node:module";

const require = createRequire(process.env.FAL_JS_CLIENT_DIR + "/");
const { fal } = require("@fal-ai/client");

fal.config({
  credentials: process.env.FAL_KEY,
  requestMiddleware: async (request) => ({
    ...request,
    url: request.url.replace(/^https:\/\/queue\.fal\.run/, `https://${process.env.FAL_QUEUE_RUN_HOST}`),
  }),
});

const statuses = [];
const result = await fal.subscribe("fal-ai/davinci-magihuman", {
  input: JSON.parse(process.env.FAL_INPUT),
  logs: true,
  onQueueUpdate: (update) => statuses.push(update.status),
});
console.log(JSON.stringify({ data: result.data, requestId: result.requestId, statuses }));
