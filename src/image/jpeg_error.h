// libjpeg error handling shared by the codecs in this folder: libjpeg reports fatal
// errors through a callback that must not return, so we longjmp back to the caller,
// which turns the formatted message into a Status. Internal to src/image.
//
// The function that calls setjmp must hold no C++ object with a non-trivial
// destructor that is created or changed after the setjmp (the codecs keep their
// buffers in the caller and pass plain pointers down).
#pragma once

#include <stdio.h>
// jpeglib.h needs stdio.h's FILE first.
#include <jpeglib.h>

// jerror.h (message codes) after jpeglib.h.
#include <jerror.h>

#include <csetjmp>
#include <cstdio>

namespace lipsync::image::internal {

struct JpegError {
  jpeg_error_mgr mgr;
  jmp_buf jump;
  char message[JMSG_LENGTH_MAX];
};

inline void OnJpegError(j_common_ptr cinfo) {
  auto* err = reinterpret_cast<JpegError*>(cinfo->err);
  (*cinfo->err->format_message)(cinfo, err->message);
  longjmp(err->jump, 1);
}

// For decoders of untrusted data: a warning (msg_level -1) is fatal like an error, as
// with TurboJPEG's TJFLAG_STOPONWARNING, because libjpeg's warnings on decode are
// corrupt data ("Premature end of JPEG file" fills the rest of the frame with grey,
// "Corrupt JPEG data: N extraneous bytes", bad Huffman codes, ...). Only warnings about
// metadata that does not change the pixels are let through. Trace messages (level >= 0)
// are ignored.
inline void OnJpegMessageStrict(j_common_ptr cinfo, int msg_level) {
  if (msg_level >= 0) return;
  const int code = cinfo->err->msg_code;
  if (code == JWRN_ADOBE_XFORM || code == JWRN_JFIF_MAJOR) return;
  auto* err = reinterpret_cast<JpegError*>(cinfo->err);
  (*cinfo->err->format_message)(cinfo, err->message);
  longjmp(err->jump, 1);
}

}  // namespace lipsync::image::internal
