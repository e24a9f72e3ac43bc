# cmake -DIN=file -DOUT=header.h -DNAME=symbol -P embed.cmake: the file's bytes as a C array
# (const unsigned char NAME[], NAME_len), so a program serves a document without reading a path.
file(READ "${IN}" hex HEX)
string(LENGTH "${hex}" n)
math(EXPR len "${n} / 2")
string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," bytes "${hex}")
string(REGEX REPLACE "(0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,)" "\\1\n" bytes "${bytes}")
file(WRITE "${OUT}.tmp" "/* generated from ${IN}; do not edit */\nstatic const unsigned char ${NAME}[] = {\n${bytes}0x00};\nstatic const unsigned long ${NAME}_len = ${len};\n")
file(RENAME "${OUT}.tmp" "${OUT}")
