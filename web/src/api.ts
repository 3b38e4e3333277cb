// The gateway client: gRPC-web to the page's own origin.
import { createClient } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-web";
import { Gateway } from "./gen/spamscope/v1/gateway_pb";

const transport = createGrpcWebTransport({ baseUrl: window.location.origin });

export const api = createClient(Gateway, transport);

/** Where the admin token is kept: this tab's session storage only. */
export const ADMIN_TOKEN_KEY = "spamscope-admin-token";
