// A minimal client of ssm-server's Stream call (proto/ssmserve/v1/ssmserve.proto) on node's
// own HTTP/2, with the few protobuf fields the browser test needs encoded by hand: enough to
// open, resume, send chunks, cancel and half-close a stream without a gRPC package.
import http2 from 'node:http2';
import net from 'node:net';

// --- protobuf wire format ---

function varint(n) {
  const out = [];
  let v = BigInt(n);
  do {
    let byte = Number(v & 0x7fn);
    v >>= 7n;
    if (v > 0n) byte |= 0x80;
    out.push(byte);
  } while (v > 0n);
  return Buffer.from(out);
}

const key = (field, wireType) => varint((field << 3) | wireType);
const varintField = (field, n) => Buffer.concat([key(field, 0), varint(n)]);
function bytesField(field, bytes) {
  const b = typeof bytes === 'string' ? Buffer.from(bytes, 'utf8') : bytes;
  return Buffer.concat([key(field, 2), varint(b.length), b]);
}

/** The fields of one message: Map field -> [values] (varints as Numbers, others as Buffers). */
function decode(buffer) {
  const fields = new Map();
  let pos = 0;
  const readVarint = () => {
    let v = 0n;
    for (let shift = 0n; ; shift += 7n) {
      const byte = buffer[pos++];
      v |= BigInt(byte & 0x7f) << shift;
      if ((byte & 0x80) === 0) return v;
    }
  };
  while (pos < buffer.length) {
    const k = Number(readVarint());
    const field = k >> 3;
    let value;
    switch (k & 7) {
      case 0: value = Number(readVarint()); break;
      case 1: value = buffer.subarray(pos, pos + 8); pos += 8; break;
      case 2: {
        const n = Number(readVarint());
        value = buffer.subarray(pos, pos + n);
        pos += n;
        break;
      }
      case 5: value = buffer.subarray(pos, pos + 4); pos += 4; break;
      default: throw new Error(`wire type ${k & 7} of field ${field}`);
    }
    if (!fields.has(field)) fields.set(field, []);
    fields.get(field).push(value);
  }
  return fields;
}

const first = (fields, field, fallback) => (fields.get(field) ?? [fallback])[0];

// --- ssmserve.v1 messages ---

export const PCM_S16LE = 1;

/** StreamRequest{open}: StreamOpen {model 1, format 2, sample_rate 3, label 4, resume_token 5,
 * resume_from_frame 6}. */
function openRequest({format = PCM_S16LE, label = '', resumeToken = '', resumeFromFrame = 0}) {
  const open = Buffer.concat([
    varintField(2, format),
    label ? bytesField(4, label) : Buffer.alloc(0),
    resumeToken ? bytesField(5, resumeToken) : Buffer.alloc(0),
    resumeFromFrame ? varintField(6, resumeFromFrame) : Buffer.alloc(0),
  ]);
  return bytesField(1, open);
}

/** StreamRequest{chunk}: StreamChunk {sequence 1, payload 2}. */
const chunkRequest = (sequence, payload) =>
  bytesField(2, Buffer.concat([varintField(1, sequence), bytesField(2, payload)]));

/** A StreamResponse as {opened: {...}} or {output: {...}}. */
function decodeResponse(bytes) {
  const response = decode(bytes);
  if (response.has(1)) {
    const o = decode(first(response, 1));
    return {opened: {
      streamId: String(first(o, 1, '')), resumeToken: String(first(o, 5, '')),
      nextSequence: first(o, 6, 0), resumed: first(o, 7, 0) === 1, nextFrame: first(o, 8, 0),
    }};
  }
  const o = decode(first(response, 2));
  return {output: {firstFrame: first(o, 1, 0), frames: first(o, 2, 0), sequence: first(o, 5, 0)}};
}

// --- the call ---

/** One Stream call to `address` (HOST:PORT, plaintext). Responses arrive in `responses`;
 * `next()` waits for the next one; `status` resolves with {code, message} when the call ends. */
export class StreamCall {
  constructor(address, open) {
    // Our own socket, so that disconnect() can drop it without a word of HTTP/2.
    const [host, port] = [address.slice(0, address.lastIndexOf(':')),
      Number(address.slice(address.lastIndexOf(':') + 1))];
    this.socket = net.connect(port, host);
    this.client = http2.connect(`http://${address}`, {createConnection: () => this.socket});
    this.client.on('error', () => {});  // the call's status says what went wrong
    this.responses = [];
    this.waiters = [];
    let buffered = Buffer.alloc(0);
    this.request = this.client.request({
      ':method': 'POST', ':path': '/ssmserve.v1.Ssm/Stream',
      'content-type': 'application/grpc', 'te': 'trailers',
    });
    this.status = new Promise((resolve) => {
      let done = false;
      const finish = (headers, fallback) => {
        if (done) return;
        if (headers['grpc-status'] === undefined && fallback === undefined) return;
        done = true;
        resolve({code: headers['grpc-status'] === undefined ? fallback :
                   Number(headers['grpc-status']),
                 message: decodeURIComponent(headers['grpc-message'] ?? '')});
        this.wake();
      };
      this.request.on('response', (headers) => finish(headers));  // trailers-only
      this.request.on('trailers', (headers) => finish(headers));
      this.request.on('close', () => finish({}, -1));  // reset without a status
      this.request.on('error', () => finish({}, -1));
    });
    this.request.on('data', (data) => {
      buffered = Buffer.concat([buffered, data]);
      while (buffered.length >= 5 && buffered.length >= 5 + buffered.readUInt32BE(1)) {
        const n = buffered.readUInt32BE(1);
        this.responses.push(decodeResponse(buffered.subarray(5, 5 + n)));
        buffered = buffered.subarray(5 + n);
      }
      this.wake();
    });
    this.send(openRequest(open));
  }

  send(message) {
    const header = Buffer.alloc(5);
    header.writeUInt32BE(message.length, 1);
    this.request.write(Buffer.concat([header, message]));
  }

  sendChunk(sequence, payload) {
    this.send(chunkRequest(sequence, payload));
  }

  wake() {
    for (const w of this.waiters.splice(0)) w();
  }

  /** Waits until `predicate(responses)` holds (rejects after timeoutMs or when the call ends
   * first). */
  async until(predicate, what, timeoutMs = 10000) {
    const deadline = Date.now() + timeoutMs;
    let ended = false;
    this.status.then(() => { ended = true; });
    for (;;) {
      if (predicate(this.responses)) return this.responses;
      if (ended) {
        const s = await this.status;
        throw new Error(`the call ended (${s.code} ${s.message}) before ${what}`);
      }
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
      await new Promise((resolve) => {
        this.waiters.push(resolve);
        setTimeout(resolve, 100);
      });
    }
  }

  /** Half-closes the request stream: the server answers what it took and ends with OK. */
  halfClose() {
    this.request.end();
  }

  /** Drops the connection under the call, as a client that goes away does. (Not
   * request.close(): node half-closes the stream before it resets it, a clean end.) */
  disconnect() {
    this.socket.destroy();
  }

  close() {
    this.client.close();
  }
}
