// libjpeg error handling shared by the codecs in this folder: libjpeg reports fatal
// errors through a callback that must not return, so we longjmp back to the caller,
// which turns the formatted message into a Status. Internal to src/image.
#pragma once

#include <stdio.h>
// jpeglib.h needs stdio.h's FILE first.
#include <jpeglib.h>

#include <csetjmp>

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

}  // namespace lipsync::image::internal
