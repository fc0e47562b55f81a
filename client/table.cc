// Table rendering.
#include "client/table.h"

#include <algorithm>
#include <utility>

namespace poold::client {

Table::Table(std::vector<Column> columns) : columns_(std::move(columns)) {}

void Table::AddRow(std::vector<std::string> cells) {
  cells.resize(columns_.size());
  rows_.push_back(std::move(cells));
}

std::string Table::Render() const {
  std::vector<size_t> widths(columns_.size());
  for (size_t c = 0; c < columns_.size(); ++c) {
    widths[c] = columns_[c].name.size();
    for (const std::vector<std::string>& row : rows_) {
      widths[c] = std::max(widths[c], row[c].size());
    }
  }
  std::string out;
  auto append_line = [&](auto cell_at) {
    std::string line;
    for (size_t c = 0; c < columns_.size(); ++c) {
      const std::string& cell = cell_at(c);
      if (c > 0) line += "  ";
      const std::string pad(widths[c] - cell.size(), ' ');
      if (columns_[c].align == kLeft) {
        line += cell + pad;
      } else {
        line += pad + cell;
      }
    }
    line.erase(line.find_last_not_of(' ') + 1);
    out += line;
    out += '\n';
  };
  append_line([&](size_t c) -> const std::string& { return columns_[c].name; });
  for (const std::vector<std::string>& row : rows_) {
    append_line([&](size_t c) -> const std::string& { return row[c]; });
  }
  return out;
}

}  // namespace poold::client
