#!/usr/bin/env node
// S3-compatible server for the continuous-profiling tests. Test-only.
//
// s3rver stores the objects. It does not verify Signature V4 (it only checks that the access
// key exists), so a middleware in front of it re-signs every request with the `aws4` package,
// an independent SigV4 implementation, and answers 403 SignatureDoesNotMatch unless the
// request's signature is identical. Credentials: access key S3RVER, secret S3RVER. The payload
// hash is covered as the signed x-amz-content-sha256 header; the body itself is not re-hashed.
//
//   node server.js --directory DIR [--address 127.0.0.1] [--port 0] [--bucket NAME]...
//
// Prints one JSON line {"address": ..., "port": ...} on stdout once it listens, and exits when
// its stdin closes (so it never outlives the test that started it) or on SIGTERM/SIGINT.
'use strict';

const crypto = require('crypto');
const fs = require('fs');
const aws4 = require('aws4');
const S3rver = require('s3rver');

const SECRETS = { S3RVER: 'S3RVER' };

// s3rver encrypts ListObjectsV2 continuation tokens with single DES, which OpenSSL 3 (Node 17+)
// only has in its legacy provider. Triple DES with three equal keys is the same cipher and is
// in the default provider.
for (const name of ['createCipheriv', 'createDecipheriv']) {
  const original = crypto[name];
  crypto[name] = function (algorithm, key, iv, options) {
    if (String(algorithm).toLowerCase() === 'des' && key.length === 8) {
      return original.call(crypto, 'des-ede3-cbc', Buffer.concat([key, key, key]), iv, options);
    }
    return original.call(crypto, algorithm, key, iv, options);
  };
}

function s3Error(ctx, status, code, message) {
  ctx.status = status;
  ctx.type = 'application/xml';
  ctx.body =
    '<?xml version="1.0" encoding="UTF-8"?>\n' +
    `<Error><Code>${code}</Code><Message>${message}</Message></Error>`;
}

// Checks the Authorization header of every request against aws4's signature of the same
// request (method, raw path and query, the signed headers' values, scope and date).
function verifySigV4() {
  const pattern =
    /^AWS4-HMAC-SHA256 Credential=([^/]+)\/(\d{8})\/([^/]+)\/([^/]+)\/aws4_request, ?SignedHeaders=([a-z0-9;-]+), ?Signature=([0-9a-f]{64})$/;
  return async (ctx, next) => {
    const m = pattern.exec(ctx.get('authorization'));
    if (!m) {
      return s3Error(ctx, 403, 'AccessDenied', 'missing or malformed SigV4 Authorization header');
    }
    const [, accessKeyId, date, region, service, signedHeaders, signature] = m;
    const secretAccessKey = SECRETS[accessKeyId];
    if (!secretAccessKey) {
      return s3Error(ctx, 403, 'InvalidAccessKeyId', 'unknown access key');
    }
    if (!ctx.get('x-amz-date').startsWith(date)) {
      return s3Error(ctx, 403, 'SignatureDoesNotMatch', 'scope date differs from x-amz-date');
    }
    const headers = {};
    for (const name of signedHeaders.split(';')) headers[name] = ctx.get(name);
    const signed = aws4.sign(
      { host: ctx.get('host'), method: ctx.method, path: ctx.req.url, service, region, headers },
      { accessKeyId, secretAccessKey },
    );
    const expected = /Signature=([0-9a-f]{64})/.exec(signed.headers.Authorization)[1];
    const expectedHeaders = /SignedHeaders=([^,]+)/.exec(signed.headers.Authorization)[1];
    if (expected !== signature || expectedHeaders !== signedHeaders) {
      return s3Error(
        ctx,
        403,
        'SignatureDoesNotMatch',
        'The request signature we calculated does not match the signature you provided.',
      );
    }
    await next();
  };
}

function parseArgs(argv) {
  const opts = { address: '127.0.0.1', port: 0, directory: '', buckets: [] };
  for (let i = 0; i < argv.length; i++) {
    const next = () => {
      if (i + 1 >= argv.length) throw new Error(`${argv[i]} needs a value`);
      return argv[++i];
    };
    switch (argv[i]) {
      case '--directory': opts.directory = next(); break;
      case '--address': opts.address = next(); break;
      case '--port': opts.port = Number(next()); break;
      case '--bucket': opts.buckets.push(next()); break;
      default: throw new Error(`unknown argument ${argv[i]}`);
    }
  }
  if (!opts.directory) throw new Error('--directory is required');
  return opts;
}

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  fs.mkdirSync(opts.directory, { recursive: true });
  const server = new S3rver({
    address: opts.address,
    port: opts.port,
    directory: opts.directory,
    silent: true,
    configureBuckets: opts.buckets.map((name) => ({ name, configs: [] })),
  });
  server.middleware.unshift(verifySigV4());  // before s3rver's own middleware and routes
  const { address, port } = await server.run();
  process.stdout.write(JSON.stringify({ address, port }) + '\n');

  let closing = false;
  const shutdown = async () => {
    if (closing) return;
    closing = true;
    try {
      await server.close();
    } finally {
      process.exit(0);
    }
  };
  process.on('SIGTERM', shutdown);
  process.on('SIGINT', shutdown);
  process.stdin.on('end', shutdown);
  process.stdin.on('close', shutdown);
  process.stdin.resume();
}

main().catch((err) => {
  process.stderr.write(`s3-test-server: ${err.stack || err}\n`);
  process.exit(1);
});
