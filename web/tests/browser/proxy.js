// A UDP and TCP forwarder between browser pages and the edge that a test can cut without
// closing anything: packets and bytes are dropped silently, as on a dead network path,
// so the page gets no close and must notice the silence itself.

import dgram from "node:dgram";
import net from "node:net";

const HOST = "127.0.0.1";

function listening(server, ...args) {
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.once("listening", () => {
      server.off("error", reject);
      resolve();
    });
    if (server instanceof net.Server) {
      server.listen(...args);
    } else {
      server.bind(...args);
    }
  });
}

export class CutProxy {
  /** "none", "both" (drop every direction) or "downstream" (drop only edge-to-page traffic). */
  #cut = "none";
  #udp = null;
  #tcp = null;
  /** UDP flows by client address: one upstream socket each. */
  #flows = new Map();
  #connections = new Set();

  /** Starts forwarding 127.0.0.1:<udpPort> to `udpTarget` and 127.0.0.1:<tcpPort> to `tcpTarget`. */
  static async start({ udpTarget, tcpTarget }) {
    const proxy = new CutProxy();
    await proxy.#startUdp(udpTarget);
    await proxy.#startTcp(tcpTarget);
    return proxy;
  }

  get udpPort() {
    return this.#udp.address().port;
  }

  get tcpPort() {
    return this.#tcp.address().port;
  }

  /**
   * Stops forwarding without closing sockets. UDP flows carry on after `restore()`, because
   * QUIC copes with lost packets. TCP connections open now stay dead for good, because a
   * byte stream with a hole in it cannot be resumed; connections made after `restore()` work.
   */
  cut(direction = "both") {
    this.#cut = direction;
    for (const connection of this.#connections) {
      connection.dead = true;
    }
  }

  restore() {
    this.#cut = "none";
  }

  #dropsUp() {
    return this.#cut === "both";
  }

  #dropsDown() {
    return this.#cut !== "none";
  }

  async #startUdp(target) {
    this.#udp = dgram.createSocket("udp4");
    this.#udp.on("message", (packet, client) => {
      const key = `${client.address}:${client.port}`;
      let upstream = this.#flows.get(key);
      if (upstream === undefined) {
        upstream = dgram.createSocket("udp4");
        upstream.on("message", (reply) => {
          if (!this.#dropsDown()) {
            this.#udp.send(reply, client.port, client.address);
          }
        });
        upstream.on("error", () => {});
        upstream.connected = false;
        upstream.connect(target.port, target.host, () => {
          upstream.connected = true;
        });
        this.#flows.set(key, upstream);
      }
      if (!this.#dropsUp()) {
        // A packet sent before `connect` completes would be taken as addressed to a port.
        const send = () => upstream.send(packet, () => {});
        if (upstream.connected) {
          send();
        } else {
          upstream.once("connect", send);
        }
      }
    });
    await listening(this.#udp, 0, HOST);
  }

  async #startTcp(target) {
    this.#tcp = net.createServer((client) => {
      const connection = { client, upstream: net.connect(target.port, target.host), dead: this.#cut !== "none" };
      this.#connections.add(connection);
      const { upstream } = connection;
      client.setNoDelay(true);
      upstream.setNoDelay(true);
      client.on("data", (bytes) => {
        // During a downstream cut the page's bytes still reach the edge, even on a dead connection.
        if (!connection.dead || this.#cut === "downstream") {
          upstream.write(bytes);
        }
      });
      upstream.on("data", (bytes) => {
        if (!connection.dead) {
          client.write(bytes);
        }
      });
      const end = () => {
        // A dead connection stays open on both sides: the page must detect the silence.
        if (!connection.dead) {
          client.destroy();
          upstream.destroy();
          this.#connections.delete(connection);
        }
      };
      client.on("close", end);
      upstream.on("close", end);
      client.on("error", () => {});
      upstream.on("error", () => {});
    });
    await listening(this.#tcp, 0, HOST);
  }

  /** Closes every socket of the proxy. */
  close() {
    this.#udp?.close();
    for (const upstream of this.#flows.values()) {
      upstream.close();
    }
    for (const { client, upstream } of this.#connections) {
      client.destroy();
      upstream.destroy();
    }
    this.#tcp?.close();
  }
}
