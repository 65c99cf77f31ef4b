# ssm_proto_library(NAME OUT_DIR): a static library NAME of the C++ protobuf and gRPC code of
# ssmserve.proto, generated into OUT_DIR (its include directory). Used by the main build
# (proto/CMakeLists.txt) and by the fuzz project (tests/fuzz), which compiles it with clang.
set(SSM_PROTO_DIR ${CMAKE_CURRENT_LIST_DIR})
function(ssm_proto_library name out)
  set(src ${SSM_PROTO_DIR}/ssmserve/v1/ssmserve.proto)
  file(MAKE_DIRECTORY ${out})
  set(gen ${out}/ssmserve/v1/ssmserve.pb.cc ${out}/ssmserve/v1/ssmserve.pb.h
          ${out}/ssmserve/v1/ssmserve.grpc.pb.cc ${out}/ssmserve/v1/ssmserve.grpc.pb.h)
  add_custom_command(
    OUTPUT ${gen}
    COMMAND protobuf::protoc
    ARGS --proto_path=${SSM_PROTO_DIR} --cpp_out=${out} --grpc_out=${out}
         --plugin=protoc-gen-grpc=$<TARGET_FILE:gRPC::grpc_cpp_plugin> ${src}
    DEPENDS ${src} protobuf::protoc gRPC::grpc_cpp_plugin
    COMMENT "Generating C++ from ssmserve.proto")
  add_library(${name} STATIC ${gen})
  target_include_directories(${name} PUBLIC ${out})
  target_link_libraries(${name} PUBLIC protobuf::libprotobuf gRPC::grpc++)
  target_compile_options(${name} PRIVATE -w)
endfunction()
