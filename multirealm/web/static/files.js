// Files over HTTP (docs/protocol.md, "Files over HTTP"), authorised by an
// Authorization header: the session never goes in a URL.

export class UploadError extends Error {}

// POST /files with the raw file as the body; onProgress(fraction) as it goes.
export function upload(file, conversation, token, onProgress) {
  const target = conversation.kind === 'group' ? 'group' : 'to';
  const query = `${target}=${encodeURIComponent(conversation.name)}&name=${encodeURIComponent(file.name)}`;
  return new Promise((resolve, reject) => {
    const request = new XMLHttpRequest();
    request.open('POST', `/files?${query}`);
    request.setRequestHeader('Authorization', `Bearer ${token}`);
    request.setRequestHeader('Content-Type', 'application/octet-stream');
    request.upload.addEventListener('progress', (event) => {
      if (event.lengthComputable) onProgress(event.loaded / event.total);
    });
    request.addEventListener('load', () => {
      let reply;
      try {
        reply = JSON.parse(request.responseText);
      } catch {
        reject(new UploadError(`the upload failed (HTTP ${request.status})`));
        return;
      }
      if (reply.status === 'OK') resolve(reply);
      else reject(new UploadError(reply.message));
    });
    request.addEventListener('error', () => reject(new UploadError('the upload failed: the realm could not be reached')));
    request.send(file);
  });
}

// GET /files/<id> with the header, then save it under its name from a blob URL.
export async function download(fileId, name, token) {
  const response = await fetch(`/files/${encodeURIComponent(fileId)}`, {
    headers: { Authorization: `Bearer ${token}` },
  });
  if (!response.ok) {
    let message = `the download failed (HTTP ${response.status})`;
    try {
      message = (await response.json()).message;
    } catch { /* not JSON: keep the status */ }
    throw new UploadError(message);
  }
  const url = URL.createObjectURL(await response.blob());
  const link = document.createElement('a');
  link.href = url;
  link.download = name;
  link.hidden = true;
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60000);
}
