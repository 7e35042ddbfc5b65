// Replies from an image file straight to a socket (sendfile through native/sendFile.c), and the
// socket's send buffer size, for the NBD server.
import { loadAddon } from './nativeAddon';

interface SendFileAddon {
  sendReply(socketFd: number, header: Buffer, fileFd: number, position: number, length: number): number;
  setSendBuffer(socketFd: number, bytes: number): number;
}

let addon: SendFileAddon | null | undefined;

/** The addon built at install, or null: then replies go through buffers. */
function load(): SendFileAddon | null {
  if (addon === undefined) addon = loadAddon<SendFileAddon>('send_file', 'DISKIMG_NO_SENDFILE');
  return addon;
}

export function sendFileAvailable(): boolean {
  return load() !== null;
}

/**
 * Sends `header`, then `length` bytes of the file `fileFd` from `position`, to the socket, without
 * blocking; returns how many bytes (header first) went, fewer where the socket's buffer filled up
 * or the send failed: the caller sends the rest through its stream, which reports any failure.
 * Only when nothing else is queued on the socket (its bytes would be overtaken).
 */
export function sendReply(socketFd: number, header: Buffer, fileFd: number, position: number, length: number): number {
  return load()!.sendReply(socketFd, header, fileFd, position, length);
}

/** Asks for a send buffer of `bytes` (the kernel doubles it, up to net.core.wmem_max); returns what it granted, or -1. */
export function setSendBuffer(socketFd: number, bytes: number): number {
  const a = load();
  return a ? a.setSendBuffer(socketFd, bytes) : -1;
}
